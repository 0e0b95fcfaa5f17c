"""Validated detectors of personal data in a prompt, and redaction of what they find.

Every detector reads the prompt's canonical view (``normalize.canonical``: NFKC, invisible characters
removed, every Unicode digit ASCII, the confusables of "@" and "." folded), so a card in fullwidth
digits or with zero-width spaces between its groups reads as the card it is; findings are mapped
back to the original text, so redaction replaces every original character of the item.

Built-in detectors (``config.BUILTIN_DETECTORS``) check what they match, not only its shape:

  email   local@domain: a local part of at most 64 characters (letters and digits of any script,
          ``. _ % + ' -``; no leading, trailing or doubled dot; the longest such part before the "@")
          and a dotted domain ending in a TLD of 2+ letters.
  card    12 to 19 digits with an issuer's prefix (Visa, Mastercard, Amex, Discover, JCB, Diners,
          UnionPay, Maestro), a length that issuer uses, and a valid Luhn checksum.
  iban    a country of the IBAN registry, that country's length and BBAN structure (python-stdnum's
          registry), and ISO 7064 mod-97 = 1; any case.
  us_ssn  AAA-GG-SSSS without the never-issued areas (000, 666, 900-999), group 00, serial 0000 and
          the advertising numbers; nine digits in any other grouping only after "SSN" or "social
          security" and at most three filler words ("SSN: 123456789").
  phone   every country's numbers, validated with libphonenumber's metadata (``phonenumbers``): after
          "+" or "00" and a country code, a number of a length that country uses; written nationally,
          a number valid in one of ``policy.phone_regions`` (with its trunk prefix where that country
          writes one) and written as a phone number is (grouped, or the area code in parentheses), or
          any plausible number right after a word like "call", "phone", "tel", "mobile".

Numbers, however they are written: a *digit chain* is digit groups joined by up to five separators
each (any whitespace including newlines, dots, dashes of any kind, slashes, backslashes,
underscores, middle dots, parentheses), repeated or mixed; letters around it do not matter
("Visa4111111111111111"). Cards, SSNs and phone numbers are whole groups of a chain: a card may be
any consecutive groups (so "4111 1111 1111 1111 12/27" is a card and an expiry date), an SSN in
AAA-GG-SSSS form is a whole chain, a phone number a whole chain or a part of one between spaces.
Validation is what keeps false positives down: dates, times, versions, IPv4 addresses, prices,
ISBNs and order numbers fail it (bench/classify.py measures both sides).

Overlaps: built-in detectors take characters in the order email, IBAN, card, US SSN, phone; a later one
never takes characters an earlier one took. Custom findings then compete with the built-in ones: the longer
wins, the earlier on a tie, and a phone number loses to anything else. Findings never overlap, sorted by
start. Operator patterns are RE2 (linear time in the text, whatever the pattern).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import phonenumbers
from phonenumbers import PhoneMetadata
from stdnum import iban as stdnum_iban
from stdnum import numdb as stdnum_numdb
from stdnum.exceptions import ValidationError

from edge_agent.config import BUILTIN_DETECTORS, CustomDetector, PolicyConfig, compile_custom_pattern
from edge_agent.policy.normalize import canonical

__all__ = ["Detectors", "Span", "redact"]


@dataclass(frozen=True)
class Span:
    """``text[start:end]`` is what ``detector`` (a built-in's or a custom detector's name) found."""

    detector: str
    start: int
    end: int


# --- email -------------------------------------------------------------------------------------
# Matched on the reversed text before an "@", so that the regex reads leftwards from it.
_LOCAL_REVERSED = re.compile(r"[\w.%+'-]{1,64}")
_LOCAL_LEAD = ".%+'-"  # what a local part does not start with (quotes, list dashes, dots)
# The TLD ends where letters end: digits glued after it are something else ("a@b.com4111...").
_DOMAIN = re.compile(r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,63}(?![^\W\d]|-)")
_DOMAIN_MAX = 253

# --- digit chains ------------------------------------------------------------------------------
# What may stand between the digit groups of one number, up to five in a row, mixed.
_SEP_CLASS = r"[\s.,;:|\-/\\_()\u00b7\u2010-\u2015\u2022\u2043\u2212\u2219\u22c5]"
# Scanning is done on the text's *shape*, one byte per character, so that the regexes start with a literal
# the engine skips to at memchr speed: ASCII digits "0", ASCII letters "a", separators " " (the non-ASCII
# ones folded first), anything else "x".
_SEP_ASCII = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f.-/\\_()"
# Punctuation that joins groups only tight ("4111,1111,1111,1111"); with a space it separates list items.
_SEP_TIGHT = ",;:|"
_SHAPE = bytes(
    ord("0")
    if chr(b) in "0123456789"
    else ord("a")
    if chr(b).isalpha() and b < 128
    else ord(" ")
    if chr(b) in _SEP_ASCII
    else ord(",")
    if chr(b) in _SEP_TIGHT
    else ord("x")
    for b in range(256)
)
_SHAPE_FOLD = re.compile("[\x85\xa0\u00b7\u1680\u2010-\u2015\u2022\u2028\u2029\u2043\u2212\u2219\u22c5]")
_CHAIN = re.compile(rb"0(?:0| {1,8}0|,0)*")
# Two letters and two digits, or a separator between them: where an IBAN may start.
_IBAN_HINT = re.compile(rb"00(?<=aa00)|0(?<=aa 0)0|0(?<=aa0) 0")


def _shape(text: str) -> bytes:
    if not text.isascii():
        text = _SHAPE_FOLD.sub(" ", text)  # the non-ASCII separators, one character each
    return text.encode("ascii", "replace").translate(_SHAPE)


_GROUP = re.compile(r"[0-9]+")
_CARD_MIN, _CARD_MAX = 12, 19
_PHONE_MIN, _PHONE_MAX = 7, 17  # digits, with a country code or trunk prefix; E.164 allows 15 after "+"
_MAX_PHONE_GROUPS = 8
_MAX_PHONE_STARTS = 16  # places in one run where a phone number is looked for

_LUHN_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")

_SSN_INVALID = frozenset({"078051120", "219099999"})  # advertised in a wallet insert; a pamphlet's example
# What may stand between "SSN" / "social security" and its digits: separators and up to three words
# ("number", "is", "no."). Searched on the 60 characters before the digits.
_SSN_CONTEXT = re.compile(
    r"(?<![^\W\d_])(?:ssn|ss#|social[ \t-]+security)(?:[\s:#=.,-]+[^\W\d_]{1,15}){0,3}"
    r"[\s:#=.,(-]*\Z",
    re.IGNORECASE,
)
# Words after which a number is a phone number even when it is written as a bare run of digits (not a
# redaction placeholder's "[PHONE]").
_PHONE_CONTEXT = re.compile(
    r"(?<!\[)(?:(?<![^\W\d_])(?:phone|telephone|tel|mobile|mob|cell|cellphone|call|ring|text|sms|whatsapp|fax|dial|"
    r"contact|reach|hotline|landline|(?:my|our|his|her|their|your|phone|contact|mobile|cell) number|"
    r"t[ée]l[ée]phone|portable|telefon|handy|m[óo]vil|tel[ée]fono|telefone|cellulare|telefoon|mobiel|bel|"
    r"kom[óo]rka|numer|celular|ligue|appelez|appelle|anrufen|rufen|llama|ll[áa]mame|chiama|chiamami|bellen|"
    r"zadzwo[ńn]|ligar)(?![^\W\d_])|電話|携帯|番号)"
    r"[^0-9]{0,30}\Z",
    re.IGNORECASE,
)
# What before a number makes it a price, an order or a version rather than a phone number.
# An extension written after a phone number belongs to it: "x885", " ext. 12", " ext 4".
_EXTENSION = re.compile(r"(?:x|\s?ext\.?\s?)[0-9]{1,6}(?![0-9])", re.IGNORECASE)
# Words right before a number that say it is something else.
_NOT_PHONE_CONTEXT = re.compile(
    r"(?<![^\W\d_])(?:isbn|issn|serial|s/n|sn|tracking|parcel|order|invoice|ticket|membership|member|reference|ref|"
    r"sku|case|id|uuid|version|build|release|account|receipt|sendungsnummer|bestellnummer|rechnung|commande|"
    r"pedido|ordine|factura|fattura|population|inhabitants|po|unix|time|timestamp|epoch)\b[^0-9]{0,20}\Z"
    r"|\b1Z ?[A-Z0-9]{3} ?[A-Z0-9]{3} ?\Z",
    re.IGNORECASE,
)  # the rest of a UPS tracking number "1Z 999 AA1 01 ..."
# "[" and "]" too: glued to a redaction placeholder a number reads as it did glued to the item it replaced.
_NOT_PHONE_BEFORE = frozenset("#$€£¥%[]")
_DATE_SHAPES = frozenset(
    {(4, 2, 2), (4, 1, 2), (4, 2, 1), (4, 1, 1), (2, 2, 4), (1, 2, 4), (2, 1, 4), (1, 1, 4), (2, 2, 2)}
)

# Issuers by prefix (leading digits) and the lengths they use: Visa, Mastercard, Amex, Discover, JCB (and
# its 15-digit 1800/2131), Diners, UnionPay, Maestro (12 to 19 digits; 0604 is in generators' tables).
_MAESTRO = ("50", "56", "57", "58", "59", "6304", "6390", "67", "0604")


def _luhn(digits: str) -> bool:
    b = digits.encode("ascii")
    return (sum(b[-1::-2]) + sum(b[-2::-2].translate(_LUHN_DOUBLED)) - 48 * len(b)) % 10 == 0


@cache
def _card_lengths(first4: str) -> frozenset[int]:
    """The lengths the issuer whose prefix begins ``first4`` (four digits) uses; empty: no issuer."""
    p2, p3, p4 = int(first4[:2]), int(first4[:3]), int(first4)
    if first4[0] == "4":  # Visa
        return frozenset({13, 16, 19})
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return frozenset({16})
    if p2 in (34, 37):  # American Express
        return frozenset({15})
    if p4 == 6011 or p2 == 65 or 644 <= p3 <= 649:  # Discover
        return frozenset(range(16, 20))
    if 3500 <= p4 <= 3589:  # JCB (3528-3589; generators use all of 35xx)
        return frozenset(range(16, 20))
    if p4 in (1800, 2131):  # JCB, 15 digits
        return frozenset({15})
    if p2 in (36, 38, 39) or 300 <= p3 <= 305 or p3 == 309:  # Diners Club
        return frozenset(range(14, 20))
    if p2 == 62 or p2 == 81:  # UnionPay
        return frozenset(range(16, 20))
    if first4.startswith(_MAESTRO) or 6759 <= p4 <= 6763:  # Maestro
        return frozenset(range(12, 20))
    return frozenset()


def _ssn_number(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return (
        area not in ("000", "666")
        and area[0] != "9"
        and group != "00"
        and serial != "0000"
        and digits not in _SSN_INVALID
    )


# --- IBAN --------------------------------------------------------------------------------------
def _iban_lengths() -> dict[str, int]:
    """Each country of the IBAN registry (python-stdnum's copy of SWIFT's) and the length of its IBANs."""
    lengths = {}
    for _, country, _, info, _ in stdnum_numdb.get("iban").prefixes:
        sizes = re.findall(r"([0-9]+)!?[nac]", info.get("bban", ""))
        if len(country) == 2 and sizes:
            lengths[country] = 4 + sum(map(int, sizes))
    return lengths


_IBAN_LENGTHS = _iban_lengths()
_IBAN_SEP = re.compile(_SEP_CLASS)
_ASCII_ALNUM = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_IBAN_LETTERS = {ord(c): str(ord(c) - ord("A") + 10) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def _iban_valid(compact: str) -> bool:
    rearranged = (compact[4:] + compact[:4]).translate(_IBAN_LETTERS)
    if int(rearranged) % 97 != 1:
        return False
    try:  # length and the country's BBAN structure; not national check digits, which not every bank uses
        stdnum_iban.validate(compact, check_country=False)
    except ValidationError:
        return False
    return True


# --- phone metadata ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Region:
    code: str
    trunk: str  # national prefix, "" where the country has none
    trunk_required: bool  # written nationally, the number starts with it
    lengths: frozenset[int]  # possible national significant number lengths
    valid: Any  # compiled general national number pattern
    mobile: Any  # compiled mobile number pattern, or None


# Where mobile numbers are written as bare digits: no trunk prefix (IT, ES, PL, ...), or none for mobiles (IN).
# Not NANP: there every valid ten-digit run would be a "mobile".
_MOBILE_AS_WRITTEN = frozenset({"IT", "ES", "PL", "IN", "PT", "GR", "DK", "NO", "CZ", "SK", "LU", "MT", "CY"})
# Where a national number is commonly written without its trunk prefix.
_TRUNK_OPTIONAL = frozenset({"US", "CA", "BR", "AR", "MX", "RU", "KZ", "HU"})


@cache
def _region(code: str) -> _Region | None:
    meta = PhoneMetadata.metadata_for_region(code)
    if meta is None or meta.general_desc is None or not meta.general_desc.national_number_pattern:
        return None
    trunk = meta.national_prefix or ""
    mobile = meta.mobile.national_number_pattern if meta.mobile is not None else None
    return _Region(
        code,
        trunk,
        bool(trunk) and code not in _TRUNK_OPTIONAL,
        frozenset(meta.general_desc.possible_length or ()),
        re.compile(meta.general_desc.national_number_pattern),
        re.compile(mobile) if mobile else None,
    )


@cache
def _calling_code(code: int) -> tuple[_Region, ...]:
    return tuple(r for r in map(_region, phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ())) if r)


def _international(digits: str, strict: bool) -> bool:
    """``digits`` (after "+" or "00") are a country code and a national number of a length it uses; ``strict``:
    and one valid by the metadata."""
    for cc_len in (1, 2, 3):
        regions = _calling_code(int(digits[:cc_len]))
        if not regions:
            continue
        nsn = digits[cc_len:]
        for r in regions:
            national = nsn[len(r.trunk) :] if r.trunk and nsn.startswith(r.trunk) else nsn
            if len(national) in r.lengths and (not strict or r.valid.fullmatch(national)):
                return True
        return False
    return False


def _national(digits: str, regions: Sequence[_Region], first_group: int = 0) -> bool:
    """``digits`` are a valid national number of one of ``regions``; with ``first_group``, also written as that
    country writes it: the first group as long as its area code (or mobile prefix) is."""
    for r in regions:
        if r.trunk and digits.startswith(r.trunk):
            national = digits[len(r.trunk) :]
        elif r.trunk_required:
            continue
        else:
            national = digits
        if (
            len(national) in r.lengths
            and r.valid.fullmatch(national)
            and (not first_group or first_group == _area_length(national, r.code) + len(digits) - len(national))
        ):
            return True
    return False


def _mobile(digits: str, regions: Sequence[_Region]) -> bool:
    """``digits``, as written (no trunk prefix), are a mobile number of one of ``regions``: "3485574995" (IT),
    "609141777" (PL), "9347040673" (IN)."""
    return any(r.mobile is not None and r.code in _MOBILE_AS_WRITTEN and r.mobile.fullmatch(digits) for r in regions)


@lru_cache(maxsize=4096)
def _area_length(national: str, region: str) -> int:
    """The length of the first group of the national number as libphonenumber formats it, without trunk."""
    number = phonenumbers.PhoneNumber(
        country_code=phonenumbers.country_code_for_region(region), national_number=int(national)
    )
    if national.startswith("0"):  # Italian numbers keep their leading zeros
        number.italian_leading_zero = True
        number.number_of_leading_zeros = len(national) - len(national.lstrip("0"))
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    groups = re.findall(r"[0-9]+", formatted)[1:]  # after the country code
    return len(groups[0]) if len(groups) > 1 else 0


class _Taken:
    """The characters earlier findings took: non-overlapping [start, end) spans, kept sorted."""

    __slots__ = ("starts", "ends")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, start: int, end: int) -> None:
        k = bisect.bisect_right(self.starts, start)
        self.starts.insert(k, start)
        self.ends.insert(k, end)

    def pieces(self, start: int, end: int) -> Iterable[tuple[int, int, bool]]:
        """[start, end) cut where taken spans begin and end: (piece start, piece end, free)."""
        pos = start
        k = max(0, bisect.bisect_right(self.starts, start) - 1)
        while pos < end and k < len(self.starts):
            a, b = self.starts[k], self.ends[k]
            if b <= pos:
                k += 1
                continue
            if a >= end:
                break
            if a > pos:
                yield pos, a, True
            yield max(a, pos), min(b, end), False
            pos = min(b, end)
            k += 1
        if pos < end:
            yield pos, end, True

    def overlaps(self, start: int, end: int) -> bool:
        k = bisect.bisect_left(self.starts, end) - 1
        return k >= 0 and self.ends[k] > start


def _glued(c: str) -> bool:
    """A character a number is glued to, in scripts written with spaces between words; Chinese, Japanese and
    Thai put numbers right against words ("電話番号は080-1731-6056です")."""
    return (c.isalnum() or c == "_") and c < "\u0530"


class _Chain:
    """The digit groups of one chain: group k is text[starts[k]:ends[k]], free until a finding takes it."""

    __slots__ = ("text", "starts", "ends", "digits", "free", "_words")

    def __init__(self, text: str, start: int, end: int, taken: _Taken):
        self.text = text
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.digits: list[str] = []
        self.free: list[bool] = []
        self._words: dict[int, tuple[bool, bool]] = {}
        for m in _GROUP.finditer(text, start, end):
            a, b = m.span()
            if not (taken.starts and taken.overlaps(a, b)):
                self._add(a, b, True)
                continue
            # cut at what earlier findings took: "DE89...3000" + "4111..." glued are an IBAN and a card
            for piece_start, piece_end, free in taken.pieces(a, b):
                self._add(piece_start, piece_end, free)

    def _add(self, start: int, end: int, free: bool) -> None:
        self.starts.append(start)
        self.ends.append(end)
        self.digits.append(self.text[start:end])
        self.free.append(free)

    def __len__(self) -> int:
        return len(self.digits)

    def sep(self, k: int) -> str:
        """What stands between group k and group k + 1."""
        return self.text[self.ends[k] : self.starts[k + 1]]

    def words_before(self, lead: int) -> tuple[bool, bool]:
        """Whether a phone word ("call", "tel") and whether a word that makes it something else ("order",
        "ISBN") stands right before ``lead``; looked up once per place, however many windows start there."""
        found = self._words.get(lead)
        if found is None:
            window = max(0, lead - 40)
            found = (
                bool(_PHONE_CONTEXT.search(self.text, window, lead)),
                bool(_NOT_PHONE_CONTEXT.search(self.text, window, lead)),
            )
            self._words[lead] = found
        return found

    def take(self, i: int, j: int) -> None:
        for k in range(i, j + 1):
            self.free[k] = False

    def runs(self) -> Iterable[tuple[int, int]]:
        """The stretches i..j of free groups."""
        i, n = 0, len(self.digits)
        while i < n:
            if not self.free[i]:
                i += 1
                continue
            j = i
            while j + 1 < n and self.free[j + 1]:
                j += 1
            yield i, j
            i = j + 1


class Detectors:
    """The built-in detectors named in ``builtin`` and the operator's custom ones, compiled once.

    Thread-safe: ``find`` keeps no state between calls.
    """

    def __init__(
        self, builtin: Iterable[str], custom: Sequence[CustomDetector] = (), phone_regions: Sequence[str] | None = None
    ):
        names = frozenset(builtin)
        unknown = sorted(names - set(BUILTIN_DETECTORS))
        if unknown:
            raise ValueError(f"unknown built-in detectors {unknown} (known: {', '.join(BUILTIN_DETECTORS)})")
        self._email = "email" in names
        self._iban = "iban" in names
        self._card = "card" in names
        self._ssn = "us_ssn" in names
        self._phone = "phone" in names
        self._chains = self._card or self._ssn or self._phone
        regions = PolicyConfig.phone_regions if phone_regions is None else tuple(phone_regions)
        self._regions: tuple[_Region, ...] = tuple(r for r in map(_region, regions) if r)
        if len(self._regions) != len(regions):
            bad = [code for code in regions if _region(code) is None]
            raise ValueError(f"phone regions {bad}: not region codes libphonenumber knows")

        self._patterns: list[tuple[str, Any]] = []
        entries: dict[str, tuple[str, str]] = {}  # normalized keyword -> (keyword, detector name)
        for d in custom:
            if not d.name:
                raise ValueError("a custom detector needs a name")
            if not d.pattern and not d.keywords:
                raise ValueError(f"custom detector {d.name!r}: set pattern or keywords")
            if d.pattern:
                try:
                    self._patterns.append((d.name, compile_custom_pattern(d.pattern)))
                except ValueError as exc:
                    raise ValueError(f"custom detector {d.name!r}: {exc}") from None
            for keyword in d.keywords:
                words = canonical(keyword).text.split()
                if not words:
                    raise ValueError(f"custom detector {d.name!r}: empty keyword")
                entries.setdefault(" ".join(words).casefold(), (" ".join(words), d.name))
        self._keywords: re.Pattern[str] | None = None
        self._keyword_names: list[str] = []
        if entries:
            # Longest first, so "project aurora" wins over "aurora" at the same place; each keyword is its own
            # group, and the group's index names its detector. Escaped literals only: linear in the text.
            ordered = sorted(entries.values(), key=lambda e: -len(e[0]))
            alternatives = "|".join("(" + r"\s+".join(map(re.escape, k.split())) + ")" for k, _ in ordered)
            self._keywords = re.compile(r"(?<!\w)(?:" + alternatives + r")(?!\w)", re.IGNORECASE)
            self._keyword_names = [name for _, name in ordered]

    # --- API -----------------------------------------------------------------------------------
    def find(self, text: str) -> list[Span]:
        """Every validated finding, sorted by start, as spans of ``text``; findings never overlap."""
        if not text:
            return []
        view = canonical(text)
        t = view.text
        spans: list[Span] = []
        taken = _Taken()
        if self._email and "@" in t:
            self._find_emails(t, spans, taken)
        if (self._iban or self._chains) and any(c in t for c in "0123456789"):
            shape = _shape(t)
            if self._iban:
                self._find_ibans(t, shape, spans, taken)
            if self._chains:
                for m in _CHAIN.finditer(shape):
                    if shape.count(b"0", m.start(), m.end()) >= _PHONE_MIN:  # no form has fewer digits
                        self._scan_chain(t, m.start(), m.end(), spans, taken)
        if self._patterns or self._keywords is not None:
            custom = self._find_custom(t)
            if custom:
                spans = _resolve(spans, custom)
        spans.sort(key=lambda s: s.start)
        if view.identity:
            return spans
        return [Span(s.detector, *view.original_span(s.start, s.end)) for s in spans]

    def fired(self, text: str) -> set[str]:
        """The names of the detectors with a finding in ``find(text)``."""
        return {s.detector for s in self.find(text)}

    # --- built-in scans ------------------------------------------------------------------------
    @staticmethod
    def _find_emails(text: str, out: list[Span], taken: _Taken) -> None:
        n = len(text)
        floor = 0  # where the last email ended: a local part never reaches into it
        at = text.find("@")
        while at != -1:
            c = text[at - 1] if at > floor else ""
            m = (c.isalnum() or c == "_") and _LOCAL_REVERSED.match(text[max(floor, at - 64) : at][::-1])
            if m:
                # The longest valid local part ending at the "@": within 64 characters, after the last "..",
                # not starting with punctuation.
                local = m.group()[::-1]
                cut = local.rfind("..")
                stripped = local[cut + 2 :].lstrip(_LOCAL_LEAD) if cut >= 0 else local.lstrip(_LOCAL_LEAD)
                start = at - len(stripped)
                if stripped and stripped[-1] != ".":
                    endpos = min(n, at + 1 + _DOMAIN_MAX)
                    d = _DOMAIN.match(text, at + 1, endpos)
                    if d and not (d.end() == endpos < n) and "_" not in d.group():
                        out.append(Span("email", start, d.end()))
                        taken.add(start, d.end())
                        floor = d.end()
                        at = text.find("@", floor)
                        continue
            at = text.find("@", at + 1)

    @staticmethod
    def _find_ibans(text: str, shape: bytes, out: list[Span], taken: _Taken) -> None:
        """Letters glued on the left do not matter ("IBANDE89..."): the country code is the two letters
        right before the check digits."""
        n = len(text)
        for m in _IBAN_HINT.finditer(shape):
            start = m.start() - 2
            while start > 0 and shape[start + 1] != ord("a"):  # "DE 89", "BI2 77"
                start -= 1
            if shape[start : start + 2] != b"aa":
                continue
            length = _IBAN_LENGTHS.get(text[start : start + 2].upper())
            if length is None or (taken.starts and taken.overlaps(start, m.end())):
                continue
            chars = [text[start : start + 2].upper()]
            got, pos, gap = 2, start + 2, 0
            while got < length and pos < n:
                c = text[pos]
                if c in _ASCII_ALNUM:
                    chars.append(c.upper())
                    got += 1
                    gap = 0
                elif _IBAN_SEP.match(c) and gap < 3:
                    gap += 1
                else:
                    break
                pos += 1
            if got == length and _iban_valid("".join(chars)) and not (taken.starts and taken.overlaps(start, pos)):
                out.append(Span("iban", start, pos))
                taken.add(start, pos)

    def _scan_chain(self, text: str, start: int, end: int, out: list[Span], taken: _Taken) -> None:
        chain = _Chain(text, start, end, taken)
        if not any(chain.free):
            return
        first_new = len(out)
        total = sum(len(d) for d, free in zip(chain.digits, chain.free, strict=True) if free)
        if self._card and total >= _CARD_MIN:
            for i, j in list(chain.runs()):
                self._cards(chain, i, j, out)
        if self._ssn and total >= 9:
            for i, j in list(chain.runs()):
                self._ssns(chain, i, j, out)
        if self._phone and total >= _PHONE_MIN:
            for i, j in list(chain.runs()):
                self._phones(chain, i, j, out)
        for span in out[first_new:]:
            taken.add(span.start, span.end)

    @staticmethod
    def _cards(chain: _Chain, lo: int, hi: int, out: list[Span]) -> None:
        digits, i = chain.digits, lo
        while i <= hi:
            # "+44 (0)115 ...": after a "+" come a country code and a phone number
            plus = i == 0 and _text_before(chain, 0).endswith("+")
            best, j, joined = -1, i, ""
            lengths: frozenset[int] | None = None
            while j <= hi and not plus:
                joined += digits[j]
                total = len(joined)
                if total > _CARD_MAX:
                    break
                if lengths is None and total >= 4:
                    lengths = _card_lengths(joined[:4])
                    if not lengths:
                        break  # no issuer starts so: no card starts at this group
                if lengths and total in lengths and _luhn(joined) and not _ipv4(chain, i, j):
                    best = j
                j += 1
            if best >= 0:
                chain.take(i, best)
                out.append(Span("card", chain.starts[i], chain.ends[best]))
                i = best + 1
            else:
                i += 1

    @staticmethod
    def _ssns(chain: _Chain, lo: int, hi: int, out: list[Span]) -> None:
        """At the run's first group only: inside a run, what precedes a group is digits and separators, never
        the keyword, and an AAA-GG-SSSS form is a whole run (one look per run, however long the run)."""
        digits, text, i = chain.digits, chain.text, lo
        if i <= hi:
            found = -1
            # AAA-GG-SSSS with any separators, when it is the whole chain
            if (
                i == lo
                and hi == i + 2
                and len(digits[i]) == 3
                and len(digits[i + 1]) == 2
                and len(digits[i + 2]) == 4
                and _ssn_number(digits[i] + digits[i + 1] + digits[i + 2])
            ):
                found = i + 2
            else:
                a = chain.starts[i]
                before = text[max(0, a - 60) : a].lower()
                if ("ss" in before or "social" in before) and _SSN_CONTEXT.search(text, max(0, a - 60), a):
                    joined, j = "", i
                    while j <= hi and len(joined) < 9:
                        joined += digits[j]
                        j += 1
                    if len(joined) == 9 and _ssn_number(joined):
                        found = j - 1
            if found >= 0:
                chain.take(i, found)
                out.append(Span("us_ssn", chain.starts[i], chain.ends[found]))

    def _phones(self, chain: _Chain, lo: int, hi: int, out: list[Span]) -> None:
        i = fresh = lo  # `fresh`: where a number may start anywhere: the run's start, or right after a number
        words_at: int | None = None  # after a number: its start, where the words before the next one stand
        international = lo == 0 and _text_before(chain, 0).endswith("+")
        budget = _MAX_PHONE_STARTS  # a run of hundreds of parenthesized groups is no list of phone numbers
        while i <= hi and budget:
            if international and i > fresh:
                return  # what follows "+" is one international number, or no phone number at all
            # a number starts at `fresh`, or inside the run at an area code in parentheses ("1 (415) ..."):
            # anywhere else the run before it makes it a part of a longer number (one look per run, not per group)
            if i > fresh and "(" not in chain.sep(i - 1):
                i += 1
                continue
            found = -1
            budget -= 1
            for j in range(min(hi, i + _MAX_PHONE_GROUPS - 1), i - 1, -1):
                if j < hi and not _breaks(chain.sep(j)):
                    continue
                span = self._phone_at(chain, i, j, whole=(i == fresh and j == hi), words_at=words_at)
                if span is not None:
                    found = j
                    out.append(span)
                    break
            if found >= 0:
                chain.take(i, found)
                # A number found ends there: the next may start right after it ("+1 415 555 2671 (415) 555 2672"),
                # or redacting the first would bring the second to light.
                i = fresh = found + 1
                words_at = out[-1].start
            else:
                i += 1

    def _phone_at(self, chain: _Chain, i: int, j: int, whole: bool, words_at: int | None = None) -> Span | None:
        """A phone number of groups i..j, or None. ``words_at``: right after another number, the words before
        that one ("Tel 020 7946 0958 020 7946 0959"), as a redaction of the first leaves them before this."""
        text = chain.text
        digits = "".join(chain.digits[i : j + 1])
        if not _PHONE_MIN <= len(digits) <= _PHONE_MAX:
            return None
        start, end = chain.starts[i], chain.ends[j]
        # what stands right before: "+", "+(", "+ " and "(" belong to the number
        before2 = text[max(0, start - 2) : start]
        if before2.endswith("+") or before2 in ("+(", "+ "):
            prefix, lead = "+", start - len(before2) + before2.index("+")
        elif before2.endswith("("):
            prefix, lead = "(", start - 1
        else:
            prefix, lead = "", start
        before = text[lead - 1] if lead else ""
        if before and (_glued(before) or before in _NOT_PHONE_BEFORE):
            return None
        if before in ".-/" and lead >= 2 and (_glued(text[lead - 2]) or text[lead - 2] in "[]"):  # "INV-2024"
            return None
        after = text[end] if end < len(text) else ""
        if after and (after.isdigit() or after in "%€$£¥[]"):
            return None
        if (
            _glued(after)
            and not (after in "xX" and end + 1 < len(text) and text[end + 1].isdigit())
            and text[end : end + 3].lower() != "ext"
        ):
            return None
        groups = [len(d) for d in chain.digits[i : j + 1]]
        if any(c in _SEP_TIGHT for k in range(i, j) for c in chain.sep(k)):
            return None  # "10:30", "4,781,149": times and counts, never how a phone number is written
        # a word like "call" or "Tel." just before: any plausible number of digits is a phone number
        phone_word, other_word = chain.words_before(lead if words_at is None else words_at)
        context = phone_word and len(digits) <= 15
        parenthesized = prefix == "(" and j > i and ")" in chain.sep(i)
        if prefix == "(" and not parenthesized:
            lead = start
        if prefix == "+":
            # "+44 (0)20 ...": a trunk 0 written in parentheses is not dialled from abroad
            if j > i and chain.digits[i + 1] == "0" and "(" in chain.sep(i):
                digits = chain.digits[i] + "".join(chain.digits[i + 2 : j + 1])
            ok = digits[0] != "0" and _international(digits, strict=False)
        elif context:
            ok = True
        elif (
            _date_or_address(chain, i, j, groups)
            or groups == [3, 2, 4]  # [3, 2, 4]: a US SSN's shape
            or not whole
            or (_thousands(chain, i, j, groups) and not _mobile(digits, self._regions))
            or other_word
        ):
            ok = False
        elif digits.startswith("00") and not digits.startswith("000"):
            ok = len(groups) > 1 and _international(digits[2:], strict=True)
        elif parenthesized:
            # "(0161) 496 0066", "(415) 555-2671": an area code in parentheses, then the subscriber's number
            ok = 2 <= groups[0] <= 5 and 8 <= len(digits) <= 13
        elif len(groups) > 1:
            # grouped as the country groups it (area code first), or with its trunk 0 and ten digits or more
            ok = (
                len(digits) >= 8
                and max(groups) <= 8
                and (
                    _national(digits, self._regions, first_group=groups[0])
                    or _nanp_shape(chain, i, j, groups, False)
                    or (digits[0] == "0" and len(digits) >= 10 and _national(digits, self._regions))
                    or _subscriber_halves(chain, i, j, groups)
                )
            )
        else:
            # one bare run: a national number with its trunk 0 ("01174960647"), valid where it is dialled, or a
            # mobile number as written where no trunk prefix is dialled ("3485574995")
            ok = len(digits) >= 9 and (
                (digits[0] == "0" and digits[1] != "0" and len(digits) >= 10 and _national(digits, self._regions))
                or _mobile(digits, self._regions)
            )
        if not ok:
            return None
        extension = _EXTENSION.match(text, end)
        return Span("phone", lead, extension.end() if extension else end)

    # --- custom --------------------------------------------------------------------------------
    def _find_custom(self, text: str) -> list[Span]:
        found: list[Span] = []
        for name, pattern in self._patterns:
            for m in pattern.finditer(text):
                if m.end() > m.start():
                    found.append(Span(name, m.start(), m.end()))
        if self._keywords is not None:
            names = self._keyword_names
            for m in self._keywords.finditer(text):
                group = m.lastindex
                assert group is not None  # every alternative is a group, so a match always has one
                found.append(Span(names[group - 1], m.start(), m.end()))
        return found


def _text_before(chain: _Chain, k: int) -> str:
    """Up to three characters before group k, spaces and "(" dropped: ends with "+" before "+44", "+ (44)"."""
    start = chain.starts[k]
    return chain.text[max(0, start - 3) : start].replace(" ", "").replace("(", "")


def _breaks(sep: str) -> bool:
    """A separator a phone number may start or end at: whitespace or a parenthesis."""
    return any(c.isspace() or c in "()" for c in sep)


def _ipv4(chain: _Chain, i: int, j: int) -> bool:
    return (
        j - i == 3
        and all(len(d) <= 3 and int(d) <= 255 for d in chain.digits[i : j + 1])
        and all(chain.sep(k) == "." for k in range(i, j))
    )


def _date_or_address(chain: _Chain, i: int, j: int, groups: list[int]) -> bool:
    """Holds a date (2024-03-15, 15.03.2024, 03/15/24) or an IPv4 address (172.16.0.0/12), or is a version
    (1.2.3, 16.1.15.7677): dotted groups, unless French pairs (01.23.45.67.89) or 415.555.2671."""
    seps = [chain.sep(k).strip() for k in range(i, j)]
    for k in range(len(groups) - 2):
        if tuple(groups[k : k + 3]) in _DATE_SHAPES and seps[k] == seps[k + 1] and seps[k] in (".", "-", "/"):
            return True
        if k + 3 < len(groups) and _ipv4(chain, i + k, i + k + 3):
            return True
    if len(groups) >= 3 and all(s == "." for s in seps):
        trunk = chain.digits[i][0] == "0" and sum(groups) >= 9  # 0465.740.077: no version starts with 0
        return not (trunk or (set(groups) == {2} and len(groups) == 5) or groups == [3, 3, 4])
    return False


def _subscriber_halves(chain: _Chain, i: int, j: int, groups: list[int]) -> bool:
    """An area code, then the subscriber's number in two halves joined by a hyphen, as Brazil and Japan write
    them (whether the number is assigned or not): "11 3915-0008", "21-6103-1702", "(11) 91234-5678"."""
    return (
        len(groups) == 3 and groups[0] in (2, 3) and groups[1] in (4, 5) and groups[2] == 4 and chain.sep(j - 1) == "-"
    )


def _thousands(chain: _Chain, i: int, j: int, groups: list[int]) -> bool:
    """870 765 276, 1.299.000: a count written with thousands separators (a trunk 0 first is a phone number)."""
    seps = {chain.sep(k) for k in range(i, j)}
    return (
        len(groups) >= 3
        and groups[0] <= 3
        and set(groups[1:]) == {3}
        and len(seps) == 1
        and seps <= {" ", ".", ",", "\u202f"}
        and chain.digits[i][0] != "0"
    )


def _nanp_shape(chain: _Chain, i: int, j: int, groups: list[int], parenthesized: bool) -> bool:
    """(415) 555-2671, 415-555-2671, 415.555.2671, 1-415-555-2671: a North American number as written, area
    code and exchange not starting with 0 or 1 (whether assigned or not)."""
    digits = chain.digits[i : j + 1]
    if groups[:1] == [1] and digits[0] == "1":
        digits, groups = digits[1:], groups[1:]
    if groups != [3, 3, 4] or digits[0][0] in "01" or digits[1][0] in "01":
        return False
    return parenthesized or len({chain.sep(k).strip() or " " for k in range(j - 2, j)}) == 1


def _resolve(builtin: list[Span], custom: list[Span]) -> list[Span]:
    """Keep the longer of overlapping findings (the earlier on a tie; a phone number loses to anything)."""
    ranked = sorted(builtin + custom, key=lambda s: (s.detector == "phone", s.start - s.end, s.start))
    starts: list[int] = []
    kept: list[Span] = []
    for span in ranked:
        k = bisect.bisect_right(starts, span.start)
        if k and kept[k - 1].end > span.start:
            continue
        if k < len(kept) and kept[k].start < span.end:
            continue
        starts.insert(k, span.start)
        kept.insert(k, span)
    return kept


def redact(text: str, spans: Sequence[Span]) -> str:
    """Replace each span by a placeholder naming its detector: "[EMAIL]", "[PHONE]", "[CARD]", "[IBAN]",
    "[US_SSN]", a custom detector's "[" + name.upper() + "]". Overlapping spans share the first one's
    placeholder."""
    parts: list[str] = []
    pos = 0
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        start, end = max(span.start, 0), min(span.end, len(text))
        if end <= pos or end <= start:
            continue
        if start < pos:  # overlaps the previous one: hide the rest of it under that placeholder
            pos = end
            continue
        parts.append(text[pos:start])
        parts.append(f"[{span.detector.upper()}]")
        pos = end
    parts.append(text[pos:])
    return "".join(parts)
