"""Validated detectors of personal data in a prompt, and redaction of what they find.

Built-in detectors (``config.BUILTIN_DETECTORS``) check what they match, not only its shape:

  email   local@domain: a local part of at most 64 characters (letters and digits of any script,
          ``. _ % + ' -``; no leading, trailing or doubled dot; the longest such part before the "@")
          and a dotted domain ending in a TLD of 2+ letters.
  phone   E.164 after a ``+`` (8 to 15 digits; exactly 11 for +1; a trunk "(0)" not counted), and
          national forms with their own digit counts: NANP ``(415) 555-2671``, ``415-555-2671``,
          ``415.555.2671`` (area code and exchange not starting with 0 or 1, an optional leading 1),
          UK ``020 7946 0958``, ``07700 900123``, French ``01 23 45 67 89``, German ``030 1234567``.
          A bare run of digits is never a phone number.
  card    13 to 19 digits, bare or grouped by spaces or dashes, with a known issuer prefix, a length
          that issuer uses, and a valid Luhn checksum.
  iban    a country of the IBAN registry, that country's length, and ISO 7064 mod-97 = 1; grouped
          by spaces or not, any case.
  us_ssn  ``AAA-GG-SSSS`` (or spaces) without the never-issued areas (000, 666, 900-999), group 00,
          serial 0000 and the advertising numbers; nine bare digits only after "SSN" or "social
          security" and at most three filler words ("SSN: 123456789", "social security number is ...").

How a prompt is scanned, so that one without personal data costs microseconds:
  email   only when the text holds an "@": from each one, the local part is read leftwards (a regex
          on the reversed 64 characters before it) and the domain rightwards.
  digits  the text's *shape*, one byte per character (ASCII digits "0", letters "a", separators
          themselves, anything else "x"), is searched by regexes that start with a literal, which
          the regex engine skips to at memchr speed: "aa00" for an IBAN's start, and chains of 8 or
          more digits for cards, SSNs and phone numbers. A chain splits into runs of digit groups
          joined by one separator (space . - / or a parenthesis); forms are tried on whole groups,
          and a window starts or ends inside a run only at a space. Runs that are exactly one
          common form (4111 1111 1111 1111, 123-45-6789, 415-555-2671) are checked directly.
  custom  each operator pattern's finditer; all keywords in one alternation, skipped outright on
          ASCII text that holds none of their first words.

Overlaps: built-in detectors take characters in the order email, IBAN, card, US SSN, phone; a later
one never takes characters an earlier one took (card digits never read as a phone number), and next
to a taken group a boundary is judged as it will read once that finding is redacted, so redacted text
holds no new finding. Custom findings then compete with the built-in ones: the longer wins, the
earlier on a tie, and a phone number loses to anything else. Findings never overlap, sorted by start.
"""

from __future__ import annotations

import bisect
import re
import string
from dataclasses import dataclass
from itertools import accumulate
from typing import Iterable, Sequence

from edge_agent.config import BUILTIN_DETECTORS, CustomDetector

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
_DOMAIN = re.compile(r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,63}(?![\w-])")
_DOMAIN_MAX = 253

# --- digits ------------------------------------------------------------------------------------
# One byte per character (encode("ascii", "replace") keeps the indices): ASCII digits "0", ASCII
# letters "a", the run separators themselves, anything else "x".
_SHAPE = bytes(ord("0") if chr(b) in string.digits else ord("a") if chr(b) in string.ascii_letters
               else b if chr(b) in " .-/()" else ord("x") for b in range(256))
# Two digits after two letters (the literal "00" first: letters are common, digit pairs are not).
_IBAN_HINT = re.compile(rb"00(?<=aa00)")
# 8+ digits joined by short separators, from a chain's first digit: a superset of the runs worth a
# closer look.
_CHAIN = re.compile(rb"0(?<!00)(?:[ .\-/()]{0,2}0){7,}")
# Digit groups joined by one separator: a space, a dot, a dash, a slash, or a parenthesis with an
# optional space on its outer side ("(415) 555", "+1 (415)").
_RUN = re.compile(rb"0(?:0|[ .\-/]0| ?\(0|\) ?0)*")
_SEPARATORS = re.compile(r"([^0-9]+)")


def _whole_forms() -> dict[bytes, str]:
    """Runs that are one whole number of a common form, by shape: validated directly, without
    splitting the run into groups. Anything else, or a failed check, goes the general way."""
    forms: dict[bytes, str] = {}
    for sep in (b" ", b"-"):
        for groups in ((4, 4, 4, 4), (4, 6, 5), (4, 6, 4), (4, 4, 4, 4, 3)):
            forms[sep.join(b"0" * g for g in groups)] = "card"
        forms[sep.join((b"000", b"00", b"0000"))] = "us_ssn"
    for n in range(13, 20):
        forms[b"0" * n] = "card"
    for sep in (b" ", b"-", b"."):
        forms[sep.join((b"000", b"000", b"0000"))] = "nanp"
        for close in (b")", b") "):
            forms[b"000" + close + b"000" + sep + b"0000"] = "nanp()"
    return forms


_WHOLE = _whole_forms()

# Separators where a window may start or end inside a run, both ways alike.
_BREAKS = frozenset({" ", " (", ") "})
_PHONE_SEPS = frozenset({" ", "-", "."})
_E164_SEPS = frozenset({" ", "-", ".", " (", "(", ")", ") "})
_UK_SHAPES = ((3, 4, 4), (4, 3, 4), (5, 3, 3), (5, 6), (4, 6), (5, 5))
_DIGIT_DETECTORS = frozenset({"phone", "card", "iban", "us_ssn"})

# IBAN registry lengths (SWIFT, ISO 13616).
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}
# Exactly the country's length in letters and digits, single spaces allowed between them, and no
# letter or digit right after.
_IBAN_BY_LENGTH = {length: re.compile(r"[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]){%d}(?!\w)" % (length - 4))
                   for length in set(_IBAN_LENGTHS.values())}
_IBAN_LETTERS = {ord(c): str(ord(c) - ord("A") + 10) for c in string.ascii_uppercase}

_LUHN_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")

_SSN_INVALID = frozenset({"078051120", "219099999"})
# What may stand between "SSN" / "social security" and nine bare digits: separators and up to three
# words of letters ("number", "is", "no."). Searched on the 60 characters before the digits.
_SSN_CONTEXT = re.compile(r"(?<!\w)(?:ssn|ss#|social[ \t-]+security)(?:[\s:#=.,-]+[^\W\d_]{1,15}){0,3}"
                          r"[\s:#=.,(-]*\Z", re.IGNORECASE)


def _word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def _luhn(digits: str) -> bool:
    b = digits.encode("ascii")
    return (sum(b[-1::-2]) + sum(b[-2::-2].translate(_LUHN_DOUBLED)) - 48 * len(b)) % 10 == 0


def _card_number(digits: str) -> bool:
    """An issuer's prefix, a length that issuer uses, and the Luhn checksum."""
    n = len(digits)
    p2, p3, p4 = int(digits[:2]), int(digits[:3]), int(digits[:4])
    if digits[0] == "4":                                   # Visa
        ok = n in (13, 16, 19)
    elif 51 <= p2 <= 55 or 2221 <= p4 <= 2720:             # Mastercard
        ok = n == 16
    elif p2 in (34, 37):                                   # American Express
        ok = n == 15
    elif p4 == 6011 or p2 == 65 or 644 <= p3 <= 649:       # Discover
        ok = 16 <= n <= 19
    elif 3528 <= p4 <= 3589:                               # JCB
        ok = 16 <= n <= 19
    elif p2 in (36, 38) or 300 <= p3 <= 305:               # Diners Club
        ok = 14 <= n <= 19
    elif p2 == 62:                                         # UnionPay
        ok = 16 <= n <= 19
    else:
        ok = False
    return ok and _luhn(digits)


def _ssn_number(area: str, group: str, serial: str) -> bool:
    return (area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
            and area + group + serial not in _SSN_INVALID)


def _iban_checksum(compact: str) -> bool:
    rearranged = compact[4:] + compact[:4].upper()
    if not rearranged.isdigit():  # letters as numbers, A = 10 ... Z = 35
        rearranged = rearranged.upper().translate(_IBAN_LETTERS)
    return int(rearranged) % 97 == 1


class _Taken:
    """The characters earlier findings took: non-overlapping [start, end) spans, kept sorted."""

    __slots__ = ("starts", "ends")

    def __init__(self, spans: Iterable[Span] = ()):
        self.starts: list[int] = []
        self.ends: list[int] = []
        for span in spans:
            self.add(span.start, span.end)

    def add(self, start: int, end: int) -> None:
        k = bisect.bisect_right(self.starts, start)
        self.starts.insert(k, start)
        self.ends.insert(k, end)

    def overlapping(self, start: int, end: int) -> list[tuple[int, int]]:
        k = bisect.bisect_left(self.starts, end) - 1
        found = []
        while k >= 0 and self.ends[k] > start:
            found.append((self.starts[k], self.ends[k]))
            k -= 1
        return found

    def covers(self, pos: int) -> bool:
        k = bisect.bisect_right(self.starts, pos) - 1
        return k >= 0 and pos < self.ends[k]


def _context(text: str, start: int, end: int, taken: _Taken) -> tuple[str, bool, bool]:
    """What surrounds the run text[start:end]: the "(" or "+" right before it (part of a phone number)
    or "", whether it may start there and whether it may end there. A character an earlier finding
    took reads as its placeholder's "]" or "[" will."""
    n = len(text)
    c = text[start - 1] if start else ""
    if c and taken.starts and taken.covers(start - 1):
        c = "]"
    before = c if c in ("(", "+") else ""
    if before:
        c = text[start - 2] if start >= 2 else ""
        if c and taken.starts and taken.covers(start - 2):
            c = "]"
        left_ok = not (c and _word_char(c))
    else:
        left_ok = not c or not (_word_char(c) or c in ".-/")
    # A letter or digit right after, or a dot, dash or slash leading on into one, joins the run to
    # something else ("2671x", "2671-ext"). What follows a run is never a later run's digit.
    c = text[end] if end < n else ""
    if c and taken.starts and taken.covers(end):
        c = "["
    if not c:
        right_ok = True
    elif _word_char(c):
        right_ok = False
    elif c in ".-/" and end + 1 < n and not (taken.starts and taken.covers(end + 1)):
        right_ok = not _word_char(text[end + 1])
    else:
        right_ok = True
    return before, left_ok, right_ok


class _Run:
    """One run of digit groups and what surrounds it; windows are inclusive group indices i..j."""

    __slots__ = ("digs", "sizes", "seps", "pos", "last", "used", "before", "left_ok", "right_ok")

    def __init__(self, text: str, start: int, end: int, taken: _Taken):
        parts = _SEPARATORS.split(text[start:end])
        self.digs = digs = parts[0::2]
        self.seps = parts[1::2]
        self.sizes = [len(d) for d in digs]
        # group k is text[pos[2k]:pos[2k + 1]]
        self.pos = pos = list(accumulate(map(len, parts), initial=start))
        self.last = len(digs) - 1
        # Groups an earlier finding took (an email or IBAN starts at a group's start and ends at a
        # group's end), then those this run's windows take.
        self.used = used = [False] * len(digs)
        if taken.starts:
            for a, b in taken.overlapping(start, end):
                for k in range(len(digs)):
                    if pos[2 * k] < b and pos[2 * k + 1] > a:
                        used[k] = True
        self.before, self.left_ok, self.right_ok = _context(text, start, end, taken)

    def start_ok(self, i: int) -> bool:
        """A window may start at group i: the run's start (after a "+" only for E.164), or a break."""
        if i == 0:
            return self.left_ok and self.before != "+"
        if self.used[i - 1]:  # as it will read after "[PLACEHOLDER]"
            return self.seps[i - 1][-1] not in ".-/"
        return self.seps[i - 1] in _BREAKS

    def end_ok(self, j: int) -> bool:
        if j == self.last:
            return self.right_ok
        return self.used[j + 1] or self.seps[j] in _BREAKS

    def paren(self, i: int) -> bool:
        """Group i is in parentheses: "(415) 555-2671", "(030) 1234567"."""
        opened = self.before == "(" if i == 0 else self.seps[i - 1][-1] == "("
        return opened and i < self.last and self.seps[i][0] == ")"

    def free(self, i: int, j: int) -> bool:
        return not any(self.used[i:j + 1])

    def take(self, i: int, j: int) -> None:
        for k in range(i, j + 1):
            self.used[k] = True

    # --- card ----------------------------------------------------------------------------------
    def card_at(self, i: int) -> int:
        """The last group of the longest card number starting at group i, or -1."""
        sizes, digs, seps, used = self.sizes, self.digs, self.seps, self.used
        size = sizes[i]
        if size >= 13:
            return i if size <= 19 and self.end_ok(i) and _card_number(digs[i]) else -1
        last = self.last
        if size != 4 or i == last:
            return -1
        sep = seps[i]
        if sep != " " and sep != "-":
            return -1
        best, total, j = -1, 4, i
        while j < last:
            if j > i and (seps[j] != sep or sizes[j] < 4):  # one separator; inner groups of 4-6
                break
            size = sizes[j + 1]
            if size > 6 or used[j + 1] or total + size > 19:
                break
            j += 1
            total += size
            if total >= 13 and self.end_ok(j) and _card_number("".join(digs[i:j + 1])):
                best = j
        return best

    # --- US SSN --------------------------------------------------------------------------------
    def ssn_at(self, i: int, text: str) -> int:
        sizes, digs = self.sizes, self.digs
        size = sizes[i]
        if size == 3:
            if i + 2 > self.last:
                return -1
            sep = self.seps[i]
            if ((sep == "-" or sep == " ") and self.seps[i + 1] == sep and sizes[i + 1] == 2
                    and sizes[i + 2] == 4 and not self.used[i + 1] and not self.used[i + 2]
                    and self.end_ok(i + 2) and _ssn_number(digs[i], digs[i + 1], digs[i + 2])):
                return i + 2
            return -1
        if size == 9 and self.end_ok(i):
            d = digs[i]
            if _ssn_number(d[:3], d[3:5], d[5:]):
                a = self.pos[2 * i]
                if _SSN_CONTEXT.search(text, max(0, a - 60), a):
                    return i
        return -1

    # --- phone ---------------------------------------------------------------------------------
    def e164(self) -> int:
        """The last group of an E.164 number right after the run's "+", or -1."""
        digs, seps, last, used = self.digs, self.seps, self.last, self.used
        if digs[0][0] == "0" or used[0]:
            return -1
        nanp = digs[0][0] == "1"  # +1: exactly 11 digits
        best, total = -1, 0
        for j in range(last + 1):
            if used[j]:
                break
            if j:
                sep = seps[j - 1]
                if sep not in _E164_SEPS:
                    break
                if sep[0] == ")" and (j < 2 or seps[j - 2][-1] != "("):  # ")" closes one group
                    break
                if sep[-1] == "(":
                    if j == last or seps[j][0] != ")":
                        break
                    if digs[j] == "0":  # a trunk prefix written "(0)" is not dialled from abroad
                        continue
            total += self.sizes[j]
            if total > 15:
                break
            if total >= 8 and self.end_ok(j):
                if not nanp:
                    best = j
                elif total == 11:
                    return j
        return best

    def nanp(self, c: int, opened: bool) -> bool:
        """Groups c..c+2 are a NANP number: (415) 555-2671, 415-555-2671, 415.555.2671."""
        sizes = self.sizes
        if c + 2 > self.last or sizes[c] != 3 or sizes[c + 1] != 3 or sizes[c + 2] != 4:
            return False
        if self.digs[c][0] in "01" or self.digs[c + 1][0] in "01":
            return False
        s1, s2 = self.seps[c], self.seps[c + 1]
        if opened:
            return (s1 == ")" or s1 == ") ") and s2 in _PHONE_SEPS
        return s1 == s2 and s1 in _PHONE_SEPS

    def national_at(self, i: int) -> int:
        """The last group of the longest national phone number starting at group i, or -1."""
        sizes, seps, last = self.sizes, self.seps, self.last
        opened = self.paren(i)
        first = self.digs[i]
        best = -1
        # NANP, optionally after a country code 1
        if first == "1":
            if not opened and i < last:
                sep = seps[i]
                if (sep in _PHONE_SEPS and self.nanp(i + 1, False)) or (sep == " (" and self.nanp(i + 1, True)):
                    best = i + 3
        elif self.nanp(i, opened):
            best = i + 2
        if best >= 0:
            return best if self.free(i, best) and self.end_ok(best) else -1
        if len(first) < 2 or first[0] != "0" or first[1] == "0" or i == last:
            return -1  # every other form starts with a trunk 0

        def seps_ok(j: int, allowed: Iterable[str]) -> bool:
            """One separator from `allowed` throughout; after "(0xx" the first closes it."""
            first_sep = seps[i]
            if opened:
                if first_sep != ")" and first_sep != ") ":
                    return False
            elif first_sep not in allowed:
                return False
            rest = seps[i + 1:j]
            if not rest:
                return True
            return rest[0] in allowed and rest.count(rest[0]) == len(rest) and (opened or rest[0] == first_sep)

        # French: 01 23 45 67 89
        if len(first) == 2:
            if not opened and i + 4 <= last and sizes[i + 1:i + 5] == [2, 2, 2, 2] and seps_ok(i + 4, _PHONE_SEPS):
                best = i + 4
        else:
            # UK: 020 7946 0958, 07700 900123, 0161 496 0000
            for shape in _UK_SHAPES:
                j = i + len(shape) - 1
                if j <= last and tuple(sizes[i:j + 1]) == shape and seps_ok(j, (" ",)):
                    best = j
                    break
            # German: 030 1234567, 030/1234567
            if best < 0 and len(first) <= 5 and 3 <= sizes[i + 1] <= 8 and 9 <= len(first) + sizes[i + 1] <= 12 \
                    and seps_ok(i + 1, (" ", "/", "-")):
                best = i + 1
        if best >= 0 and self.free(i, best) and self.end_ok(best):
            return best
        return -1


class Detectors:
    """The built-in detectors named in ``builtin`` and the operator's custom ones, compiled once.

    Thread-safe: ``find`` keeps no state between calls.
    """

    def __init__(self, builtin: Iterable[str], custom: Sequence[CustomDetector] = ()):
        names = frozenset(builtin)
        unknown = sorted(names - set(BUILTIN_DETECTORS))
        if unknown:
            raise ValueError(f"unknown built-in detectors {unknown} (known: {', '.join(BUILTIN_DETECTORS)})")
        self._email = "email" in names
        self._iban = "iban" in names
        self._card = "card" in names
        self._ssn = "us_ssn" in names
        self._phone = "phone" in names
        self._digits = bool(names & _DIGIT_DETECTORS)
        self._windows = self._card or self._ssn or self._phone

        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        entries: dict[str, tuple[str, str]] = {}  # normalized keyword -> (keyword, detector name)
        for d in custom:
            if not d.name:
                raise ValueError("a custom detector needs a name")
            if not d.pattern and not d.keywords:
                raise ValueError(f"custom detector {d.name!r}: set pattern or keywords")
            if d.pattern:
                try:
                    self._patterns.append((d.name, re.compile(d.pattern)))
                except re.error as exc:
                    raise ValueError(f"custom detector {d.name!r}: invalid pattern: {exc}") from None
            for keyword in d.keywords:
                words = keyword.split()
                if not words:
                    raise ValueError(f"custom detector {d.name!r}: empty keyword")
                entries.setdefault(" ".join(words).casefold(), (" ".join(words), d.name))
        self._keywords: re.Pattern[str] | None = None
        self._keyword_names: list[str] = []
        self._keyword_firsts: tuple[str, ...] | None = None
        if entries:
            # Longest first, so "project aurora" wins over "aurora" at the same place; each keyword is
            # its own group, and the group's index names its detector.
            ordered = sorted(entries.values(), key=lambda e: -len(e[0]))
            alternatives = "|".join("(" + r"\s+".join(map(re.escape, k.split())) + ")" for k, _ in ordered)
            self._keywords = re.compile(r"(?<!\w)(?:" + alternatives + r")(?!\w)", re.IGNORECASE)
            self._keyword_names = [name for _, name in ordered]
            # On ASCII text, lower() and IGNORECASE agree for ASCII keywords: a prescreen can skip the regex.
            if all(k.isascii() for k, _ in ordered):
                self._keyword_firsts = tuple({k.split()[0].lower() for k, _ in ordered})

    # --- API -----------------------------------------------------------------------------------
    def find(self, text: str) -> list[Span]:
        """Every validated finding, sorted by start; findings never overlap."""
        if not text:
            return []
        spans: list[Span] = []
        if self._email and "@" in text:
            self._find_emails(text, spans)
        if self._digits:
            self._find_digits(text, spans)
        if self._patterns or self._keywords is not None:
            custom = self._find_custom(text)
            if custom:
                return _resolve(spans, custom)
        if len(spans) > 1:
            spans.sort(key=lambda s: s.start)
        return spans

    def fired(self, text: str) -> set[str]:
        """The names of the detectors with a finding in ``find(text)``."""
        return {s.detector for s in self.find(text)}

    # --- built-in scans ------------------------------------------------------------------------
    @staticmethod
    def _find_emails(text: str, out: list[Span]) -> None:
        n = len(text)
        floor = 0  # where the last email ended: a local part never reaches into it
        at = text.find("@")
        while at != -1:
            c = text[at - 1] if at > floor else ""
            m = (c.isalnum() or c == "_") and _LOCAL_REVERSED.match(text[max(floor, at - 64):at][::-1])
            if m:
                # The longest valid local part ending at the "@": within 64 characters, after the last "..",
                # not starting with punctuation. Taking the longest (not rejecting a longer run) keeps the
                # choice the same when something to its left is redacted.
                local = m.group()[::-1]
                cut = local.rfind("..")
                stripped = local[cut + 2:].lstrip(_LOCAL_LEAD) if cut >= 0 else local.lstrip(_LOCAL_LEAD)
                start = at - len(stripped)
                if stripped and stripped[-1] != ".":
                    endpos = min(n, at + 1 + _DOMAIN_MAX)
                    d = _DOMAIN.match(text, at + 1, endpos)
                    if d and not (d.end() == endpos < n) and "_" not in d.group():
                        out.append(Span("email", start, d.end()))
                        floor = d.end()
                        at = text.find("@", floor)
                        continue
            at = text.find("@", at + 1)

    def _find_digits(self, text: str, out: list[Span]) -> None:
        shape = text.encode("ascii", "replace").translate(_SHAPE)
        if b"00" not in shape:
            return  # no IBAN, and no run of 8 digits
        taken = _Taken(out)  # emails
        if self._iban:
            for m in _IBAN_HINT.finditer(shape):
                found = _iban_at(text, m.start() - 2, taken)
                if found:
                    out.append(found)
                    taken.add(found.start, found.end)
        if not self._windows or shape.count(b"0") < 8:
            return
        # In text order: a run's surroundings may have been taken by the run before it.
        for chain in _CHAIN.finditer(shape):
            for m in _RUN.finditer(shape, chain.start(), chain.end()):
                start, end = m.span()
                digits = shape.count(b"0", start, end)
                # no form has fewer than 9 digits, but E.164 after a "+" has 8 or more
                if digits < 8 or (digits == 8 and (not start or text[start - 1] != "+")):
                    continue
                if taken.starts:
                    inside = taken.overlapping(start, end)
                    if inside:
                        if len(inside) == 1 and inside[0][0] <= start and end <= inside[0][1]:
                            continue  # inside an email or IBAN
                    elif self._whole(text, start, end, shape, digits, taken, out):
                        continue
                elif self._whole(text, start, end, shape, digits, taken, out):
                    continue
                self._scan_run(text, _Run(text, start, end, taken), digits, out, taken)

    def _whole(self, text: str, start: int, end: int, shape: bytes, digits: int, taken: _Taken,
               out: list[Span]) -> bool:
        """Find a run that is one number of a common form (_WHOLE) or an E.164 number of at most 12
        digits, as _scan_run would, without splitting it into a _Run; False: not so, go the general way."""
        signature = shape[start:end]
        if start and text[start - 1] == "+":
            return self._phone and self._e164_whole(text, start, end, signature, digits, taken, out)
        kind = _WHOLE.get(signature)
        if kind is None:
            return False
        before, left_ok, right_ok = _context(text, start, end, taken)
        if not (left_ok and right_ok):
            return False
        chunk = text[start:end]
        if kind == "card":
            if not (self._card and _card_number(chunk.replace(" ", "").replace("-", ""))):
                return False
            span = Span("card", start, end)
        elif kind == "us_ssn":
            if not (self._ssn and _ssn_number(chunk[:3], chunk[4:6], chunk[7:])):
                return False
            span = Span("us_ssn", start, end)
        else:  # nanp, nanp(): area code and exchange
            if not (self._phone and chunk[0] not in "01" and chunk[-8] not in "01"):
                return False
            if kind == "nanp()":
                if before != "(":
                    return False
                start -= 1
            span = Span("phone", start, end)
        out.append(span)
        taken.add(span.start, span.end)
        return True

    @staticmethod
    def _e164_whole(text: str, start: int, end: int, signature: bytes, digits: int, taken: _Taken,
                    out: list[Span]) -> bool:
        """A run after a "+" that _Run.e164 would take: at most 12 digits (too few for a card), one
        separator between groups, no parentheses, nothing an SSN could start; what it leaves (at most
        4 digits) is too short for any national form."""
        if digits > 12 or b"(" in signature or b")" in signature or b"/" in signature \
                or b"000-00-0000" in signature or b"000 00 0000" in signature:
            return False
        before, left_ok, right_ok = _context(text, start, end, taken)
        if not left_ok:
            return False
        parts = _SEPARATORS.split(text[start:end])
        groups, last = parts[0::2], len(parts) // 2
        first = groups[0][0]
        if first == "0" or any(len(g) == 9 for g in groups):
            return False
        total = length = 0
        found = -1
        for j, group in enumerate(groups):
            total += len(group)
            length += len(group) + (len(parts[2 * j - 1]) if j else 0)
            if total > 15:
                break
            if total >= 8 and (parts[2 * j + 1] == " " if j < last else right_ok):
                if first != "1":
                    found = length
                elif total == 11:  # +1: exactly 11 digits
                    found = length
                    break
        if found < 0:
            return False
        span = Span("phone", start - 1, start + found)
        out.append(span)
        taken.add(span.start, span.end)
        return True

    def _scan_run(self, text: str, run: _Run, digits: int, out: list[Span], taken: _Taken) -> None:
        pos, count, first_new = run.pos, run.last + 1, len(out)
        used = run.used
        if self._card and digits >= 13:
            i = 0
            while i < count:
                if not used[i] and run.start_ok(i):
                    j = run.card_at(i)
                    if j >= 0:
                        run.take(i, j)
                        out.append(Span("card", pos[2 * i], pos[2 * j + 1]))
                        i = j + 1
                        continue
                i += 1
        if self._ssn and digits >= 9:
            i = 0
            while i < count:
                if not used[i] and run.start_ok(i):
                    j = run.ssn_at(i, text)
                    if j >= 0:
                        run.take(i, j)
                        out.append(Span("us_ssn", pos[2 * i], pos[2 * j + 1]))
                        i = j + 1
                        continue
                i += 1
        if self._phone:
            i = 0
            if run.before == "+" and run.left_ok:
                j = run.e164()
                if j >= 0:
                    run.take(0, j)
                    out.append(Span("phone", pos[0] - 1, pos[2 * j + 1]))
                    i = j + 1
            while i < count:
                if not used[i] and run.start_ok(i):
                    j = run.national_at(i)
                    if j >= 0:
                        run.take(i, j)
                        start = pos[2 * i] - 1 if run.paren(i) else pos[2 * i]
                        out.append(Span("phone", start, pos[2 * j + 1]))
                        i = j + 1
                        continue
                i += 1
        for span in out[first_new:]:
            taken.add(span.start, span.end)

    # --- custom --------------------------------------------------------------------------------
    def _find_custom(self, text: str) -> list[Span]:
        found: list[Span] = []
        for name, pattern in self._patterns:
            for m in pattern.finditer(text):
                if m.end() > m.start():
                    found.append(Span(name, m.start(), m.end()))
        if self._keywords is not None:
            firsts = self._keyword_firsts
            lowered = text.lower() if firsts is not None and text.isascii() else ""
            if not lowered or any(w in lowered for w in firsts):
                names = self._keyword_names
                for m in self._keywords.finditer(text):
                    found.append(Span(names[m.lastindex - 1], m.start(), m.end()))
        return found


def _iban_at(text: str, start: int, taken: _Taken) -> Span | None:
    """An IBAN whose country code starts at `start`, or None."""
    length = _IBAN_LENGTHS.get(text[start:start + 2].upper())
    if length is None or (start and _word_char(text[start - 1])):
        return None
    m = _IBAN_BY_LENGTH[length].match(text, start)
    if m is None or not _iban_checksum(m.group().replace(" ", "")):
        return None
    end = m.end()
    if taken.starts and taken.overlapping(start, end):
        return None
    return Span("iban", start, end)


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
