"""The residency conformance corpus: personal data a reader recognises, and numbers that are not.

Everything here is a pure function of a seed (no I/O, no clock): the same seed and the same Faker,
schwifty and python-stdnum versions give the same corpus.

  pii_samples(seed)      plain items in sentence templates: emails and phone numbers from Faker in the
                         12 LOCALES, cards of every network Faker knows, IBANs (Faker's per locale, and
                         schwifty-built ones for every country of the IBAN registry, each checked by both
                         schwifty and stdnum), US SSNs.
  evasion_samples(seed)  the same kinds of items under TRANSFORMS a person still reads through: separator
                         mixes, Unicode digits, format characters, fullwidth forms, odd spaces, case.
  benign_samples(seed)   sentences full of numbers that are not personal data (dates, times, prices,
                         order numbers, versions, IP addresses, ISBNs, tracking numbers, Luhn-invalid
                         16-digit numbers, ...). Each is checked by `looks_like_pii` and regenerated if
                         any reading of its digit runs is a valid card, IBAN or SSN, or it holds an email.

A Sample's text[start:end] is the item as written; `core` is the part a detector must cover (a Faker
phone number's extension "x123" stays in the text after it, outside the core). Templates hold no digits
and no "@", so whatever digits a redacted sample still holds came from the item.

How a sample is judged, shared by the tests and bench/classify.py: `covered` (every letter and digit of the
item inside a finding of its kind), `leak` (what of the item a redacted text still gives a reader).

Also here, for the hypothesis properties: `card_number`, `ssn_number`, `iban_number` (valid items from
drawn integers) and `transformed`.
"""

from __future__ import annotations

import random
import re
import string
import unicodedata
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, lru_cache

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "pt_BR", "ja_JP", "en_IN", "en_AU")
REGIONS = {
    "en_US": "US",
    "en_GB": "GB",
    "de_DE": "DE",
    "fr_FR": "FR",
    "es_ES": "ES",
    "it_IT": "IT",
    "nl_NL": "NL",
    "pl_PL": "PL",
    "pt_BR": "BR",
    "ja_JP": "JP",
    "en_IN": "IN",
    "en_AU": "AU",
}
CARD_NETWORKS = ("amex", "diners", "discover", "jcb15", "jcb16", "maestro", "mastercard", "visa13", "visa16", "visa19")
# The countries of the SWIFT IBAN registry as python-stdnum knows it (iban.dat, registry v101).
IBAN_COUNTRIES = (
    "AD",
    "AE",
    "AL",
    "AT",
    "AZ",
    "BA",
    "BE",
    "BG",
    "BH",
    "BI",
    "BR",
    "BY",
    "CH",
    "CR",
    "CY",
    "CZ",
    "DE",
    "DJ",
    "DK",
    "DO",
    "EE",
    "EG",
    "ES",
    "FI",
    "FK",
    "FO",
    "FR",
    "GB",
    "GE",
    "GI",
    "GL",
    "GR",
    "GT",
    "HN",
    "HR",
    "HU",
    "IE",
    "IL",
    "IQ",
    "IS",
    "IT",
    "JO",
    "KW",
    "KZ",
    "LB",
    "LC",
    "LI",
    "LT",
    "LU",
    "LV",
    "LY",
    "MC",
    "MD",
    "ME",
    "MK",
    "MN",
    "MR",
    "MT",
    "MU",
    "NI",
    "NL",
    "NO",
    "OM",
    "PK",
    "PL",
    "PS",
    "PT",
    "QA",
    "RO",
    "RS",
    "RU",
    "SA",
    "SC",
    "SD",
    "SE",
    "SI",
    "SK",
    "SM",
    "SO",
    "ST",
    "SV",
    "TL",
    "TN",
    "TR",
    "UA",
    "VA",
    "VG",
    "XK",
    "YE",
)
RESTRICTED = ("card", "iban", "us_ssn")
KINDS = ("email", "phone", *RESTRICTED)


@dataclass(frozen=True)
class Sample:
    """One item in one sentence: text[start:end] is the item as written, text[core[0]:core[1]] the part a
    detector must cover. `detail` is the network, IBAN country or template family; `variant` is "plain"
    or the name of the transform applied."""

    kind: str
    locale: str
    value: str
    text: str
    start: int
    end: int
    core: tuple[int, int]
    detail: str
    variant: str = "plain"


@dataclass(frozen=True)
class Benign:
    """A sentence without personal data; `categories` names the kinds of numbers in it."""

    text: str
    categories: tuple[str, ...]


# --- templates (no digits, no "@") --------------------------------------------------------------
NEUTRAL = (
    "Please use {} for this.",
    "{}",
    "Here it is: {} — thanks!",
    "({})",
    "«{}»",
    "Noted down {} earlier today.",
    "Can you check whether {} is right?\nThanks",
)
CONTEXT = {
    "card": (
        "Card: {}",
        "Pay with card number {}, please.",
        "My Visa is {} and it expires soon.",
        "credit card {} (expires next year)",
        "Bitte die Karte {} belasten.",
        "Numéro de carte : {}",
        "カード番号は{}です。",
    ),
    "iban": (
        "IBAN: {}",
        "Wire it to {} by Friday.",
        "Bankverbindung: {}",
        "Mon IBAN est {}.",
        "account {}, reference invoice",
        "Transfer to IBAN {} (savings).",
    ),
    "us_ssn": (
        "SSN: {}",
        "My social security number is {}.",
        "SSN# {}",
        "social security no. {}",
        "ssn={}",
        "HR still needs my SSN {} for the form.",
        "Social Security Number\n{}",
    ),
    "phone": ("Call me on {}", "Phone: {}", "Tel. {}", "my mobile is {}, text me", "WhatsApp: {}"),
    "email": ("Email me at {}", "<{}>", "mailto:{}", "Contact: {}.", "{}, thanks", "Reply to {} by tonight"),
}
PHONE_LOCAL = {
    "en_US": "Call me at {} after lunch.",
    "en_GB": "Ring me on {} tomorrow.",
    "de_DE": "Rufen Sie mich unter {} an.",
    "fr_FR": "Appelez-moi au {}.",
    "es_ES": "Llámame al {}.",
    "it_IT": "Chiamami al {}.",
    "nl_NL": "Bel me op {}.",
    "pl_PL": "Zadzwoń pod {}.",
    "pt_BR": "Me liga no {}.",
    "ja_JP": "電話番号は{}です。",
    "en_IN": "Call me on {} in the evening.",
    "en_AU": "Give us a ring on {}.",
}
SSN_CONTEXT = CONTEXT["us_ssn"]


def _place(template: str, written: str) -> tuple[str, int, int]:
    start = template.index("{}")
    return template[:start] + written + template[start + 2 :], start, start + len(written)


def _sample(
    kind: str,
    locale: str,
    value: str,
    written: str,
    template: str,
    detail: str,
    variant: str = "plain",
    trailer: str = "",
    glue: tuple[str, str] = ("", ""),
) -> Sample:
    """written in template, between glue[0] and glue[1] and followed by trailer (a phone's extension): the
    sample's core is `written` alone."""
    text, start, end = _place(template, glue[0] + written + glue[1] + trailer)
    core = (start + len(glue[0]), start + len(glue[0]) + len(written))
    return Sample(kind, locale, value, text, start, end, core, detail, variant)


# --- checksums ----------------------------------------------------------------------------------
def luhn_valid(digits: str) -> bool:
    total = 0
    for k, c in enumerate(reversed(digits)):
        d = int(c) * (2 if k % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def luhn_complete(body: str) -> str:
    """body + the check digit that makes it Luhn-valid."""
    return body + next(str(d) for d in range(10) if luhn_valid(body + str(d)))


def ssn_valid(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return (
        len(digits) == 9
        and digits.isdigit()
        and area not in ("000", "666")
        and area[0] != "9"
        and group != "00"
        and serial != "0000"
        and digits not in ("078051120", "219099999")
    )


def iban_valid(compact: str) -> bool:
    from schwifty import IBAN
    from stdnum import iban as stdnum_iban

    if not stdnum_iban.is_valid(compact):
        return False
    with warnings.catch_warnings():  # "no national checksum algorithm is registered for AL": not ours to say
        warnings.simplefilter("ignore")
        try:
            IBAN(compact, validate_bban=True)
        except ValueError:
            return False
    return True


# --- valid items from drawn integers (hypothesis) -------------------------------------------------
CARD_PREFIXES = (
    ("4", (13, 16, 19)),
    ("51", (16,)),
    ("55", (16,)),
    ("2221", (16,)),
    ("2720", (16,)),
    ("34", (15,)),
    ("37", (15,)),
    ("6011", (16, 19)),
    ("65", (16,)),
    ("644", (16,)),
    ("3528", (16,)),
    ("3589", (16,)),
    ("36", (14,)),
    ("300", (14,)),
    ("38", (14,)),
    ("62", (16, 19)),
    ("6759", (12, 16, 19)),
    ("5018", (12, 13, 16)),
    ("6304", (16,)),
    ("2131", (15,)),
    ("1800", (15,)),
)


def card_number(prefix_index: int, length_index: int, body: int) -> str:
    prefix, lengths = CARD_PREFIXES[prefix_index % len(CARD_PREFIXES)]
    length = lengths[length_index % len(lengths)]
    middle = str(body).zfill(19)[: length - len(prefix) - 1]
    return luhn_complete(prefix + middle)


def ssn_number(area: int, group: int, serial: int) -> str:
    """area 1..899 (not 666), group 1..99, serial 1..9999, formatted AAA-GG-SSSS."""
    area = 667 if area == 666 else area
    digits = f"{area:03d}{group:02d}{serial:04d}"
    if digits in ("078051120", "219099999"):
        digits = digits[:8] + str((int(digits[8]) + 1) % 10)
    return f"{digits[:3]}-{digits[3:5]}-{digits[5:]}"


@lru_cache(maxsize=4096)
def iban_number(country_index: int, seed: int) -> str:
    """A valid IBAN of IBAN_COUNTRIES[country_index] (schwifty-built, checked by schwifty and stdnum),
    formatted in groups of four; the next country that yields one if this one does not."""
    from schwifty import IBAN

    rng = random.Random(seed)
    for k in range(len(IBAN_COUNTRIES)):
        country = IBAN_COUNTRIES[(country_index + k) % len(IBAN_COUNTRIES)]
        for _ in range(40):
            try:
                compact = IBAN.random(country_code=country, random=rng, use_registry=False).compact
            except ValueError:
                break
            if iban_valid(compact):
                return group(compact, 4, " ")
    raise AssertionError("no country yields a valid IBAN")


def group(compact: str, size: int, sep: str) -> str:
    return sep.join(compact[k : k + size] for k in range(0, len(compact), size))


def card_groups(digits: str) -> list[str]:
    """How each length is usually written: 4-6-5 (15), 4-6-4 (14), else fours."""
    if len(digits) == 15:
        return [digits[:4], digits[4:10], digits[10:]]
    if len(digits) == 14:
        return [digits[:4], digits[4:10], digits[10:]]
    return [digits[k : k + 4] for k in range(0, len(digits), 4)]


# --- transforms a reader reads through -------------------------------------------------------------
Transform = Callable[[str, random.Random], str]
_GROUPS = re.compile(r"[0-9A-Za-z]+")
_DIGIT_SCRIPTS = {  # the zero of each script's decimal digits
    "fullwidth": 0xFF10,
    "arabic_indic": 0x0660,
    "ext_arabic_indic": 0x06F0,
    "devanagari": 0x0966,
    "bengali": 0x09E6,
    "thai": 0x0E50,
    "math_bold": 0x1D7CE,
    "tamil": 0x0BE6,
}
_DASHES = "\u2010\u2011\u2013\u2014\u2212\uff0d\ufe63"
_SPACES = {
    "nbsp": "\u00a0",
    "thin_space": "\u2009",
    "narrow_nbsp": "\u202f",
    "figure_space": "\u2007",
    "ideographic_space": "\u3000",
    "en_space": "\u2002",
    "em_space": "\u2003",
}
_FORMAT = {
    "zwsp": "\u200b",
    "zwj": "\u200d",
    "zwnj": "\u200c",
    "soft_hyphen": "\u00ad",
    "lrm": "\u200e",
    "rlm": "\u200f",
    "word_joiner": "\u2060",
    "bom": "\ufeff",
}
_GLUE_WORDS = {
    "card": ("Visa", "Card", "Karte", "cardno"),
    "iban": ("IBAN", "iban", "Konto"),
    "us_ssn": ("SSN", "ssn#", "Nr"),
}


def _regroup(sep: str) -> Transform:
    return lambda value, rng: sep.join(_GROUPS.findall(value))


def _mixed_seps(choices: tuple[str, ...]) -> Transform:
    def transform(value: str, rng: random.Random) -> str:
        groups = _GROUPS.findall(value)
        return groups[0] + "".join(rng.choice(choices) + g for g in groups[1:])

    return transform


def _resize(size: int) -> Transform:
    return lambda value, rng: group("".join(_GROUPS.findall(value)), size, " ")


def _halves(value: str, rng: random.Random) -> str:
    compact = "".join(_GROUPS.findall(value))
    return compact[: len(compact) // 2] + " " + compact[len(compact) // 2 :]


def _digits_in(script: str) -> Transform:
    zero = _DIGIT_SCRIPTS[script]
    return lambda value, rng: "".join(chr(zero + int(c)) if c in string.digits else c for c in value)


def _mixed_scripts(value: str, rng: random.Random) -> str:
    zeros = [*_DIGIT_SCRIPTS.values(), ord("0")]
    return "".join(chr(rng.choice(zeros) + int(c)) if c in string.digits else c for c in value)


def _between_chars(mark: str) -> Transform:
    return lambda value, rng: mark.join(value)


def _between_groups(mark: str) -> Transform:
    """The mark after every separator; where there is none (a compact item), between groups of four."""

    def transform(value: str, rng: random.Random) -> str:
        if any(not c.isalnum() for c in value):
            return re.sub(r"([^0-9A-Za-z]+)", lambda m: m.group(1) + mark, value)
        return group(value, 4, mark)

    return transform


def _shy_groups(value: str, rng: random.Random) -> str:
    """Soft hyphens where the separators were: invisible, so the groups read as one number."""
    return "\u00ad".join(_GROUPS.findall(value)) if any(not c.isalnum() for c in value) else group(value, 4, "\u00ad")


def _isolate_groups(open_: str, close: str) -> Transform:
    return lambda value, rng: re.sub(r"[0-9A-Za-z]+", lambda m: open_ + m.group(0) + close, value)


def _spaces(space: str) -> Transform:
    return lambda value, rng: value.replace(" ", space)


def _mixed_spaces(value: str, rng: random.Random) -> str:
    return "".join(rng.choice(list(_SPACES.values())) if c == " " else c for c in value)


def fullwidth(value: str) -> str:
    return "".join("\u3000" if c == " " else chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in value)


def _mixed_case(value: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in value)


def _email_at(at: str) -> Transform:
    return lambda value, rng: value.replace("@", at)


def _email_dot(dot: str) -> Transform:
    def transform(value: str, rng: random.Random) -> str:
        local, domain = value.split("@")
        return local + "@" + domain.replace(".", dot)

    return transform


def _build_transforms() -> dict[str, tuple[frozenset[str], Transform]]:
    numbers = frozenset(RESTRICTED)
    digital = numbers | {"phone"}
    every = digital | {"email"}
    spaced = frozenset({"card", "iban", "phone"})
    t: dict[str, tuple[frozenset[str], Transform]] = {
        "dots": (numbers, _regroup(".")),
        "double_space": (numbers, _regroup("  ")),
        "mixed_dash_space": (numbers, _mixed_seps(("-", " ", " - ", "- ", " -", "--"))),
        "newline": (numbers, _regroup("\n")),
        "crlf": (numbers, _regroup("\r\n")),
        "tab": (numbers, _regroup("\t")),
        "slash": (numbers, _regroup("/")),
        "underscore": (numbers, _regroup("_")),
        "unicode_dash": (numbers, _mixed_seps(tuple(_DASHES))),
        "space_dash_space": (numbers, _regroup(" - ")),
        "compact": (numbers, _regroup("")),
        "halves": (frozenset({"card", "iban"}), _halves),
        "pairs": (frozenset({"card", "iban"}), _resize(2)),
        "threes": (frozenset({"card", "iban"}), _resize(3)),
        "mixed_separators": (numbers, _mixed_seps((".", " ", "-", "/", "_", "  ", "\n", " . "))),
        "glued_word": (numbers, None),  # per kind, below
        "glued_both": (frozenset({"card", "iban"}), None),
        "mixed_scripts": (digital, _mixed_scripts),
        "soft_hyphen_groups": (numbers, _shy_groups),
        "bidi_isolate": (digital, _isolate_groups("\u2066", "\u2069")),
        "bidi_embed": (digital, _isolate_groups("\u202a", "\u202c")),
        "fullwidth": (every, lambda value, rng: fullwidth(value)),
        "mixed_spaces": (spaced, _mixed_spaces),
        "iban_lower": (frozenset({"iban"}), lambda value, rng: value.lower()),
        "iban_lower_compact": (frozenset({"iban"}), lambda value, rng: value.replace(" ", "").lower()),
        "mixed_case": (frozenset({"iban", "email"}), _mixed_case),
        "email_upper": (frozenset({"email"}), lambda value, rng: value.upper()),
        "at_fullwidth": (frozenset({"email"}), _email_at("\uff20")),
        "at_small": (frozenset({"email"}), _email_at("\ufe6b")),
        "dot_fullwidth": (frozenset({"email"}), _email_dot("\uff0e")),
        "dot_leader": (frozenset({"email"}), _email_dot("\u2024")),
    }
    for script in _DIGIT_SCRIPTS:
        t[f"digits_{script}"] = (digital, _digits_in(script))
    for name, mark in _FORMAT.items():
        t[f"{name}_chars"] = (every, _between_chars(mark))
        if name != "soft_hyphen":
            t[f"{name}_groups"] = (digital, _between_groups(mark))
    for name, space in _SPACES.items():
        t[name] = (spaced, _spaces(space))
    return t


TRANSFORMS = _build_transforms()


def transforms_for(kind: str) -> list[str]:
    return [name for name, (kinds, _) in TRANSFORMS.items() if kind in kinds]


def apply_transform(name: str, kind: str, value: str, rng: random.Random) -> tuple[str, str, str]:
    """(glue before, the item as transformed, glue after): the glue is a word written against the item
    ("Visa4111..."), part of the text but not of the item."""
    if name in ("glued_word", "glued_both"):
        before = rng.choice(_GLUE_WORDS[kind])
        after = rng.choice(("thanks", "ok", "EOM")) if name == "glued_both" else ""
        return before, "".join(_GROUPS.findall(value)), after
    return "", TRANSFORMS[name][1](value, rng), ""


def transformed(name: str, kind: str, value: str, rng: random.Random) -> str:
    """The item under the transform with its glue, as it is written in the text."""
    return "".join(apply_transform(name, kind, value, rng))


# --- plain items -----------------------------------------------------------------------------------
@cache
def _faker_for(locale: str):
    from faker import Faker

    return Faker(locale)


def _faker(locale: str, seed: int):
    """The locale's Faker (one per locale, built once), seeded afresh: use it before asking for another."""
    fake = _faker_for(locale)
    fake.seed_instance(seed)
    return fake


_EXTENSION = re.compile(r"(?:x|ext\.?|#)\s*\d+$")


def _phone_items(seed: int, per_locale: int) -> Iterator[tuple[str, str, str]]:
    """(locale, number, extension): Faker's phone_number() as written, an extension split off."""
    for k, locale in enumerate(LOCALES):
        fake = _faker(locale, seed * 100 + k)
        for _ in range(per_locale):
            written = fake.phone_number()
            ext = _EXTENSION.search(written)
            yield (locale, written[: ext.start()], ext.group(0)) if ext else (locale, written, "")


def _card_items(seed: int, per_network: int) -> Iterator[tuple[str, str, str]]:
    """(locale, digits, network). Faker's JCB 16 draws any "35" prefix; JCB's range is 3528-3589, and a number
    outside it is drawn again (Faker's other networks are taken as Faker makes them)."""
    fakes = {locale: _faker(locale, seed * 100 + 50 + k) for k, locale in enumerate(LOCALES)}
    for k, network in enumerate(CARD_NETWORKS):
        for n in range(per_network):
            locale = LOCALES[(k + n) % len(LOCALES)]
            digits = fakes[locale].credit_card_number(network)
            while network == "jcb16" and not "3528" <= digits[:4] <= "3589":
                digits = fakes[locale].credit_card_number(network)
            assert luhn_valid(digits), (network, digits)
            yield locale, digits, network


def _iban_items(seed: int, per_country: int) -> Iterator[tuple[str, str]]:
    """(locale, compact): Faker's iban() per locale, then per_country schwifty-built ones per country."""
    for k, locale in enumerate(LOCALES):
        # Faker's own IBANs for the locale; some countries' (FR, IT, PL) fail their national check digits
        # nearly always, and those countries come from schwifty below instead.
        fake = _faker(locale, seed * 100 + 80 + k)
        valid = [compact for compact in (fake.iban() for _ in range(20)) if iban_valid(compact)]
        for compact in valid[:2]:
            yield locale, compact
    for c in range(len(IBAN_COUNTRIES)):
        for n in range(per_country):
            compact = iban_number(c, seed * 1000 + c * 10 + n).replace(" ", "")
            if compact[:2] == IBAN_COUNTRIES[c]:
                yield "", compact


def _ssn_items(seed: int, count: int) -> Iterator[str]:
    fake = _faker("en_US", seed * 100 + 99)
    for _ in range(count):
        ssn = fake.ssn()
        if ssn_valid(ssn.replace("-", "")):
            yield ssn


def _plain_card(digits: str, rng: random.Random) -> str:
    style = rng.choice(("compact", " ", "-", " "))
    return digits if style == "compact" else style.join(card_groups(digits))


def _plain_iban(compact: str, rng: random.Random) -> str:
    return rng.choice((compact, group(compact, 4, " "), group(compact, 4, " ")))


@lru_cache(maxsize=4)
def pii_samples(
    seed: int = 13,
    phones_per_locale: int = 60,
    emails_per_locale: int = 30,
    cards_per_network: int = 24,
    ibans_per_country: int = 2,
    ssns: int = 120,
) -> tuple[Sample, ...]:
    """Every item in three templates (two for emails and phones): one neutral, the others in context."""
    rng = random.Random(seed)
    out: list[Sample] = []
    for locale, number, ext in _phone_items(seed, phones_per_locale):
        for template in (rng.choice(NEUTRAL), rng.choice(CONTEXT["phone"] + (PHONE_LOCAL[locale],) * 3)):
            out.append(_sample("phone", locale, number, number, template, "faker", trailer=ext))
    for k, locale in enumerate(LOCALES):
        fake = _faker(locale, seed * 100 + 30 + k)
        for _ in range(emails_per_locale):
            email = fake.email()
            for template in (rng.choice(NEUTRAL), rng.choice(CONTEXT["email"])):
                out.append(_sample("email", locale, email, email, template, "faker"))
    for locale, digits, network in _card_items(seed, cards_per_network):
        for template in (rng.choice(NEUTRAL), *rng.sample(CONTEXT["card"], 2)):
            out.append(_sample("card", locale, digits, _plain_card(digits, rng), template, network))
    for locale, compact in _iban_items(seed, ibans_per_country):
        for template in (rng.choice(NEUTRAL), *rng.sample(CONTEXT["iban"], 2)):
            out.append(_sample("iban", locale, compact, _plain_iban(compact, rng), template, compact[:2]))
    for ssn in _ssn_items(seed, ssns):
        # dashed anywhere; spaced, dotted or bare only after an SSN keyword (how a reader knows it is one)
        out.append(_sample("us_ssn", "en_US", ssn, ssn, rng.choice(NEUTRAL), "dashed"))
        for style in rng.sample(("-", " ", ".", ""), 2):
            out.append(
                _sample(
                    "us_ssn",
                    "en_US",
                    ssn,
                    ssn.replace("-", style),
                    rng.choice(SSN_CONTEXT),
                    {"-": "dashed", " ": "spaced", ".": "dotted", "": "bare"}[style],
                )
            )
    return tuple(out)


@lru_cache(maxsize=4)
def evasion_samples(
    seed: int = 13, per_transform: int = 36, phones_per_transform: int = 36, emails_per_transform: int = 24
) -> tuple[Sample, ...]:
    """Each transform on `per_transform` items of each kind it applies to (items taken in turn from the plain
    set), in a random template: neutral or in context (SSNs always in context). A transform that leaves
    an item unchanged (no spaces to replace) is skipped for it."""
    rng = random.Random(seed + 1)
    plain = pii_samples(seed)
    items: dict[str, list[Sample]] = {}
    for s in plain:
        if s.variant == "plain" and s.detail != "bare":
            items.setdefault(s.kind, []).append(s)
    counts = {"phone": phones_per_transform, "email": emails_per_transform}
    out: list[Sample] = []
    for name in TRANSFORMS:
        for kind in KINDS:
            if kind not in TRANSFORMS[name][0]:
                continue
            pool = items[kind]
            want, taken, k = counts.get(kind, per_transform), 0, rng.randrange(len(pool))
            while taken < want and k < 20 * len(pool):
                source, k = pool[k % len(pool)], k + 7
                written_before = source.text[source.core[0] : source.core[1]]
                before, written, after = apply_transform(name, kind, written_before, rng)
                if written == written_before and not before:
                    continue
                trailer = source.text[source.core[1] : source.end]
                if kind == "us_ssn":
                    template = rng.choice(SSN_CONTEXT)
                elif kind == "phone":
                    template = rng.choice(NEUTRAL + CONTEXT["phone"] + (PHONE_LOCAL[source.locale],))
                else:
                    template = rng.choice(NEUTRAL + CONTEXT[kind])
                out.append(
                    _sample(
                        kind,
                        source.locale,
                        source.value,
                        written,
                        template,
                        source.detail,
                        name,
                        trailer,
                        (before, after),
                    )
                )
                taken += 1
    return tuple(out)


# --- benign sentences --------------------------------------------------------------------------------
def _isbn13(rng: random.Random) -> str:
    body = rng.choice(("978", "979")) + "".join(rng.choice(string.digits) for _ in range(9))
    check = (10 - sum(int(c) * (3 if k % 2 else 1) for k, c in enumerate(body)) % 10) % 10
    digits = body + str(check)
    if rng.random() < 0.4:
        return digits
    a = rng.randint(1, 3)
    b = rng.randint(2, 5)
    return f"{digits[:3]}-{digits[3 : 3 + a]}-{digits[3 + a : 3 + a + b]}-{digits[3 + a + b : 12]}-{digits[12]}"


def _isbn10(rng: random.Random) -> str:
    body = "".join(rng.choice(string.digits) for _ in range(9))
    check = sum((10 - k) * int(c) for k, c in enumerate(body)) % 11
    check_char = "X" if (11 - check) % 11 == 10 else str((11 - check) % 11)
    return f"{body[0]}-{body[1:4]}-{body[4:9]}-{check_char}" if rng.random() < 0.5 else body + check_char


def _ups(rng: random.Random) -> str:
    shipper = "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(6))
    body = shipper + rng.choice(("01", "02", "03", "12", "13")) + "".join(rng.choice(string.digits) for _ in range(7))
    values = [int(c) if c.isdigit() else (ord(c) - 63) % 10 for c in body]
    total = sum(v * (2 if k % 2 else 1) for k, v in enumerate(values))
    number = "1Z" + body + str((10 - total % 10) % 10)
    if rng.random() < 0.5:
        return number
    return f"{number[:2]} {number[2:5]} {number[5:8]} {number[8:10]} {number[10:14]} {number[14:17]} {number[17]}"


def _usps(rng: random.Random) -> str:
    body = rng.choice(("9400", "9205", "9361", "9505")) + "".join(rng.choice(string.digits) for _ in range(17))
    total = sum(int(c) * (3 if k % 2 == 0 else 1) for k, c in enumerate(reversed(body)))
    digits = body + str((10 - total % 10) % 10)
    return group(digits, 4, " ") if rng.random() < 0.6 else digits


def _fedex(rng: random.Random) -> str:
    body = rng.choice("7") + "".join(rng.choice(string.digits) for _ in range(10))
    weights = [1, 7, 3] * 4
    total = sum(
        int(c) * w for c, w in zip(reversed(body), weights, strict=False)
    )  # 11 digits, 12 weights: the last unused
    digits = body + str(total % 11 % 10)
    return group(digits, 4, " ") if rng.random() < 0.5 else digits


def _s10(rng: random.Random) -> str:
    digits = "".join(rng.choice(string.digits) for _ in range(8))
    total = sum(int(c) * w for c, w in zip(digits, (8, 6, 4, 2, 3, 5, 9, 7), strict=True))
    check = 11 - total % 11
    check = 5 if check == 11 else 0 if check == 10 else check
    return (
        rng.choice(("RR", "CP", "LX", "EE", "RB"))
        + digits
        + str(check)
        + rng.choice(("GB", "DE", "FR", "US", "NL", "JP"))
    )


def _luhn_invalid_16(rng: random.Random) -> str:
    body = rng.choice(("4", "5", "6", "3", "2", "1", "8", "9")) + "".join(rng.choice(string.digits) for _ in range(14))
    valid = luhn_complete(body)
    digits = body + str((int(valid[-1]) + rng.randint(1, 9)) % 10)
    style = rng.choice(("", " ", "-", " "))
    return style.join(group(digits, 4, "|").split("|")) if style else digits


def _date(rng: random.Random) -> str:
    y, m, d = rng.randint(1990, 2031), rng.randint(1, 12), rng.randint(1, 28)
    hh, mm, ss = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
    months = (
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    )
    y2, m2, d2 = y, min(12, m + rng.randint(0, 2)), rng.randint(1, 28)
    return rng.choice(
        (
            f"{y}-{m:02d}-{d:02d}",
            f"{d:02d}/{m:02d}/{y}",
            f"{m:02d}/{d:02d}/{y}",
            f"{d:02d}.{m:02d}.{y}",
            f"{d} {months[m - 1][:3]} {y}",
            f"{months[m - 1]} {d}, {y}",
            f"{y}年{m}月{d}日",
            f"{y}{m:02d}{d:02d}",
            f"{d:02d}-{m:02d}-{y} {hh:02d}:{mm:02d}",
            f"{y}-{m:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}Z",
            f"{y}-{m:02d}-{d:02d} {hh:02d}:{mm:02d}:{ss:02d}",
            f"{d:02d}.{m:02d}.{y}–{d2:02d}.{m2:02d}.{y2}",
            f"{y}-{m:02d}-{d:02d} to {y2}-{m2:02d}-{d2:02d}",
            f"{d}/{m}/{y % 100:02d}",
            f"{y}/{m:02d}/{d:02d}",
            f"Q{rng.randint(1, 4)} {y}",
            f"{d:02d} {m:02d} {y}",
            f"{m}.{d}.{y}",
        )
    )


def _time(rng: random.Random) -> str:
    h, m, s = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
    return rng.choice(
        (
            f"{h:02d}:{m:02d}",
            f"{h % 12 or 12}:{m:02d} {'am' if h < 12 else 'pm'}",
            f"{h:02d}:{m:02d}:{s:02d}",
            f"{h:02d}h{m:02d}",
            f"{h}.{m:02d}",
            f"{h:02d}:{m:02d}:{s:02d}.{rng.randint(0, 999):03d}",
            f"{h:02d}:{m:02d}–{(h + 1) % 24:02d}:{m:02d}",
        )
    )


def _price(rng: random.Random) -> str:
    whole = rng.choice((rng.randint(1, 99), rng.randint(100, 9999), rng.randint(10000, 9999999)))
    cents = rng.randint(0, 99)
    us = f"{whole:,}"
    eu = us.replace(",", ".")
    return rng.choice(
        (
            f"${us}.{cents:02d}",
            f"€{eu},{cents:02d}",
            f"{us.replace(',', ' ')},{cents:02d} €",
            f"£{us}.{cents:02d}",
            f"¥{us}",
            f"CHF {us.replace(',', chr(39))}.{cents:02d}",
            f"R$ {eu},{cents:02d}",
            f"{us.replace(',', ' ')} zł",
            f"USD {whole}.{cents:02d}",
            f"₹{whole:,}",
            f"{whole} EUR",
        )
    )


def _order(rng: random.Random) -> str:
    n = rng.randint
    return rng.choice(
        (
            f"Order #{n(100000, 999999999)}",
            f"INV-{n(2019, 2030)}-{n(1, 999999):06d}",
            f"PO {n(4500000000, 4599999999)}",
            f"Invoice {n(2019, 2030)}/{n(1, 99999):05d}",
            f"order no. 11{n(1, 4)}-{n(1000000, 9999999)}-{n(1000000, 9999999)}",
            f"ticket #{n(10000, 9999999)}",
            f"case {n(10000000, 99999999)}",
            f"RMA {n(100000, 999999)}",
            f"ORD-{n(10, 99)}-{n(1000, 9999)}-{n(1000, 9999)}",
            f"Bestellnummer {n(10000000, 99999999)}",
            f"receipt {n(1000, 9999)} {n(1000, 9999)} {n(10, 99)}",
        )
    )


def _version(rng: random.Random) -> str:
    n = rng.randint
    return rng.choice(
        (
            f"v{n(0, 9)}.{n(0, 30)}.{n(0, 99)}",
            f"version {n(1, 20)}.{n(0, 20)}.{n(0, 20)}.{n(0, 9999)}",
            f"Python 3.{n(8, 14)}.{n(0, 12)}",
            f"build {n(10000, 29999)}.{n(1000, 9999)}",
            f"kernel {n(4, 6)}.{n(0, 19)}.{n(0, 200)}",
            f"Chrome {n(100, 140)}.0.{n(4000, 7999)}.{n(10, 250)}",
            f"release {n(2019, 2030)}.{n(1, 12):02d}.{n(0, 9)}",
            f"{n(1, 9)}.{n(0, 9)}.{n(0, 9)}-rc.{n(1, 9)}",
        )
    )


def _ip(rng: random.Random) -> str:
    n = rng.randint
    return rng.choice(
        (
            f"{n(1, 223)}.{n(0, 255)}.{n(0, 255)}.{n(1, 254)}",
            f"10.{n(0, 255)}.{n(0, 255)}.{n(1, 254)}:{n(1024, 65535)}",
            f"172.{n(16, 31)}.{n(0, 255)}.0/{n(12, 28)}",
            f"192.168.{n(0, 255)}.{n(1, 254)}",
            f"2001:db8:{n(0, 65535):x}::{n(1, 255):x}",
        )
    )


def _quantity(rng: random.Random) -> str:
    n = rng.randint
    return rng.choice(
        (
            f"{n(1, 12)} x {n(50, 999)} g",
            f"{n(1000, 999999):,} units",
            f"{n(1, 500)} kg",
            f"{n(1, 9)}.{n(0, 9)} l",
            f"{n(10, 300)} km/h",
            f"{n(640, 7680)}x{n(480, 4320)} pixels",
            f"{n(1, 999)} {n(100, 999)} {n(100, 999)} inhabitants",
            f"{n(1, 99)},{n(0, 9)} m²",
            f"{n(1024, 99999999):,} bytes",
            f"{n(1, 40)} °C",
            f"pages {n(1, 400)}-{n(401, 900)}",
        )
    )


def _percent(rng: random.Random) -> str:
    n = rng.randint
    return rng.choice(
        (
            f"{n(0, 100)}.{n(0, 99)}%",
            f"{n(0, 100)} %",
            f"-{n(0, 20)},{n(0, 9)} %",
            f"{n(90, 99)}.{n(90, 99)}%",
            f"+{n(0, 300)}% year over year",
        )
    )


def _postal(rng: random.Random) -> str:
    n = rng.randint
    letters = string.ascii_uppercase
    return rng.choice(
        (
            f"{n(10000, 99999)} Berlin",
            f"{n(10000, 99999)} Paris",
            f"{n(10, 99)}-{n(100, 999)} Warszawa",
            f"{n(1000, 9999)} {rng.choice(letters)}{rng.choice(letters)} Amsterdam",
            f"〒{n(100, 999)}-{n(1000, 9999)}",
            f"{n(110001, 855999)} Delhi",
            f"NSW {n(2000, 2999)}",
            f"{n(10000, 99999)}-{n(100, 999)} São Paulo",
            f"{n(10000, 99999)} Madrid",
            f"{n(10, 99)}{n(100, 199)} Roma",
            f"SW{n(1, 20)}A {n(1, 9)}AA",
            f"ZIP {n(10000, 99999)}-{n(1000, 9999)}",
        )
    )


def _misc(rng: random.Random) -> str:
    n = rng.randint
    hexd = "0123456789abcdef"
    return rng.choice(
        (
            f"Unix time {n(1500000000, 1900000000)}",
            f"{n(-90, 90)}.{n(1000, 9999)}, {n(-180, 180)}.{n(1000, 9999)}",
            f"the score was {n(0, 9)}-{n(0, 9)}",
            f"commit {''.join(rng.choice(hexd) for _ in range(12))}",
            "uuid " + "-".join("".join(rng.choice(hexd) for _ in range(k)) for k in (8, 4, 4, 4, 12)),
            f"colour #{''.join(rng.choice(hexd) for _ in range(6))}",
            f"room {n(100, 999)}, floor {n(1, 40)}",
            f"table {n(1, 9)}.{n(1, 9)}.{n(1, 9)}",
            f"section {n(1, 20)}.{n(1, 20)}({n(1, 9)})",
            f"SKU {rng.choice(string.ascii_uppercase)}{rng.choice(string.ascii_uppercase)}-{n(1000, 9999)}-{n(10, 99)}",
            f"serial SN{n(10000000, 99999999)}",
            f"flight LH{n(100, 9999)} at gate B{n(1, 60)}",
            f"{n(1, 9)},{n(100, 999)},{n(100, 999)},{n(100, 999)} requests",
            f"port {n(1024, 65535)}",
        )
    )


BENIGN_KINDS: dict[str, tuple[Callable[[random.Random], str], tuple[str, ...]]] = {
    "date": (_date, ("The meeting moved to {}.", "Invoice dated {}.", "Backup taken {}.", "Valid until {}")),
    "time": (_time, ("The call starts at {}.", "Doors open {}.", "Logged at {}")),
    "price": (_price, ("The total is {}.", "It costs {} per seat.", "Refund of {} issued")),
    "order": (_order, ("{} has shipped.", "Please quote {} in your reply.", "See {} for details")),
    "version": (_version, ("Upgrade to {} first.", "Tested on {}.", "Regression since {}")),
    "ip": (_ip, ("The server is at {}.", "Blocked {} after the scan.", "Gateway {}")),
    "isbn": (
        lambda rng: rng.choice((_isbn13, _isbn10))(rng),
        ("ISBN {}", "The book's ISBN is {}.", "Order ISBN {} twice"),
    ),
    "tracking": (
        lambda rng: rng.choice((_ups, _usps, _fedex, _s10))(rng),
        ("Tracking number {}.", "Your parcel {} is out for delivery.", "Sendungsnummer {}"),
    ),
    "luhn_invalid_16": (
        _luhn_invalid_16,
        ("Reference {}", "Membership number {}.", "Serial {} printed on the box", "Ticket {}"),
    ),
    "quantity": (_quantity, ("We need {}.", "Stock: {}.", "About {} in total")),
    "percent": (_percent, ("Growth was {}.", "Discount {} today.", "Uptime {} this month")),
    "postal": (_postal, ("Ship it to {}.", "Office: {}.", "Address line: {}")),
    "misc": (_misc, ("Note: {}.", "{} noted.", "FYI {}")),
}
_AT_USES = (
    "Three @ $4.99 each.",
    "Ping @team before the release.",
    "Meet @ the usual place.",
    "Follow @edgefleet for news.",
)


@lru_cache(maxsize=4)
def benign_samples(seed: int = 13, count: int = 1500) -> tuple[Benign, ...]:
    """count sentences of one to three number-heavy clauses; regenerated until `looks_like_pii` says no."""
    rng = random.Random(seed + 2)
    names = list(BENIGN_KINDS)
    out: list[Benign] = []
    while len(out) < count:
        chosen = [names[len(out) % len(names)], *rng.sample(names, rng.randint(0, 2))]
        clauses = []
        for name in chosen:
            make, templates = BENIGN_KINDS[name]
            clauses.append(rng.choice(templates).format(make(rng)))
        if rng.random() < 0.05:
            clauses.append(rng.choice(_AT_USES))
        text = " ".join(clauses)
        if not looks_like_pii(text):
            out.append(Benign(text, tuple(chosen)))
    return tuple(out)


# --- the oracle for benign text -------------------------------------------------------------------------
_EMAIL = re.compile(r"[\w.%+'-]+@[\w-]+(?:\.[\w-]+)+")
_RUN = re.compile(r"[0-9]+(?:[^\w@]{1,3}[0-9]+)*")
_IBAN_START = re.compile(r"(?=([A-Z]{2}[0-9]{2}))")


def canonical(text: str) -> str:
    """NFKC, format characters removed, every decimal digit ASCII: how a reader sees the text."""
    out = []
    for c in unicodedata.normalize("NFKC", text):
        if unicodedata.category(c) == "Cf":
            continue
        d = unicodedata.decimal(c, None)
        out.append(str(d) if d is not None else c)
    return "".join(out)


def digit_reading(text: str) -> str:
    return "".join(c for c in canonical(text) if c in string.digits)


# The issuer prefixes of the card networks (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro,
# Mir, RuPay, Troy) and the odd ones Faker uses (JCB 15 "2131"/"1800", Maestro "0604").
_ISSUER = re.compile(
    r"4|5[0-9]|6[0-9]|3[0-9]|2(?:22[1-9]|2[3-9][0-9]|[3-6][0-9]{2}|7[01][0-9]|720)|220[0-4]"
    r"|2131|1800|0604|8[12]|9792"
)


def _card_like(digits: str) -> bool:
    return 12 <= len(digits) <= 19 and _ISSUER.match(digits) is not None and luhn_valid(digits)


def looks_like_pii(text: str) -> bool:
    """Whether any reading of text could be a card, IBAN, SSN or email: any window of whole digit groups of a
    run (groups joined by up to three non-word characters) that is a card (an issuer's prefix, 12-19
    digits, Luhn); a run of three groups 3-2-4 that is a valid SSN, or nine digits in a text that says
    "SSN" or "social"; any two letters and two digits that start a valid IBAN with separators dropped;
    anything shaped like an email."""
    from stdnum import iban as stdnum_iban

    seen = canonical(text)
    if _EMAIL.search(seen):
        return True
    for run in _RUN.finditer(seen):
        groups = re.findall(r"[0-9]+", run.group(0))
        for i in range(len(groups)):
            digits = ""
            for j in range(i, len(groups)):
                digits += groups[j]
                if len(digits) > 19:
                    break
                if _card_like(digits):
                    return True
                if (len(groups) == 3 and [len(g) for g in groups] == [3, 2, 4] and ssn_valid(digits)) or (
                    len(groups) == 1 and len(digits) == 9 and re.search(r"ss|social", seen, re.I)
                ):
                    return True
    upper = seen.upper()
    for m in _IBAN_START.finditer(upper):
        compact = re.sub(r"[^A-Z0-9]", "", upper[m.start() : m.start() + 50])
        for length in range(15, 35):
            if stdnum_iban.is_valid(compact[:length]):
                return True
    return False


# --- judging a sample against findings (anything with .detector, .start, .end) -------------------------
def significant(text: str, start: int, end: int) -> list[int]:
    """The positions in text[start:end] a reader reads as part of the item: its letters and digits."""
    return [i for i in range(start, end) if any(c.isalnum() for c in canonical(text[i]))]


def covered(sample: Sample, spans) -> bool:
    """Every letter and digit of the item lies inside a finding of the item's own kind."""
    own = [s for s in spans if s.detector == sample.kind]
    return all(any(s.start <= i < s.end for s in own) for i in significant(sample.text, *sample.core))


def touched(sample: Sample, spans) -> bool:
    return any(s.start < sample.core[1] and s.end > sample.core[0] for s in spans)


def leak(kind: str, value: str, redacted: str) -> str:
    """What of the item a reader still recovers from the redacted text, "" when nothing: 8 consecutive digits
    of it in a digit-only reading (letters and digits for an IBAN; all of it when shorter), or an email's
    local part."""
    if kind == "email":
        local = canonical(value).casefold().split("@")[0]
        return local if len(local) >= 4 and local in canonical(redacted).casefold() else ""
    if kind == "iban":
        item = "".join(c for c in canonical(value).upper() if c.isalnum())
        rest = "".join(c for c in canonical(redacted).upper() if c.isalnum())
    else:
        item, rest = digit_reading(value), digit_reading(redacted)
    width = min(8, len(item))
    return next((item[i : i + width] for i in range(len(item) - width + 1) if item[i : i + width] in rest), "")
