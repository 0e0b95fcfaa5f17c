"""One canonical view of a prompt's text, the one every detector reads, with a map back to the original.

What a person reads through, the canonical view reads through too:

  - Unicode NFKC, character by character: fullwidth forms, no-break and thin spaces, ligatures,
    superscript and circled digits become their plain forms;
  - format characters (category Cf: zero-width spaces and joiners, soft hyphens, bidi marks) and
    combining marks (Mn, Me: an underline or keycap drawn over a digit) are removed;
  - every Unicode decimal digit (Arabic-Indic, Devanagari, fullwidth, ...) becomes its ASCII digit;
  - the confusable forms of "@" and "." (ideographic and Arabic full stops, one-dot leader, ...)
    become "@" and ".".

ASCII text is its own canonical view, at no cost. The map back is computed only when a detector found
something, so that redaction replaces the original characters: every character that made up the item,
including the invisible ones between its parts.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["Canonical", "canonical"]

# Confusables of "@" and "." that NFKC leaves alone (Unicode's confusables.txt); NFKC already folds the
# fullwidth and small forms (U+FF20, U+FE6B, U+FF0E, U+FE52, U+2024).
_CONFUSABLES = {
    "\u3002": ".",  # IDEOGRAPHIC FULL STOP (and HALFWIDTH IDEOGRAPHIC FULL STOP, by NFKC)
    "\u06d4": ".",  # ARABIC FULL STOP
    "\u0701": ".",  # SYRIAC SUPRALINEAR FULL STOP
    "\u0702": ".",  # SYRIAC SUBLINEAR FULL STOP
    "\ua4f8": ".",  # LISU LETTER TONE MYA TI
    "\ua60e": ".",  # VAI FULL STOP
    "\U00010a50": ".",  # KHAROSHTHI PUNCTUATION DOT
}
_DROPPED_CATEGORIES = frozenset({"Cf", "Mn", "Me"})
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def _fold(char: str) -> str:
    if unicodedata.category(char) in _DROPPED_CATEGORIES:
        return ""
    out = []
    for c in unicodedata.normalize("NFKC", char):
        if c.isascii():
            out.append(c)
            continue
        digit = unicodedata.decimal(c, None)
        if digit is not None:
            out.append(str(digit))
        elif unicodedata.category(c) not in _DROPPED_CATEGORIES:
            out.append(_CONFUSABLES.get(c, c))
    return "".join(out)


class _FoldTable(dict[int, str]):
    """str.translate's table for non-ASCII characters, filled as characters are first seen (a few thousand at
    most in practice, each a few hundred bytes)."""

    def __missing__(self, code_point: int) -> str:
        folded = _fold(chr(code_point))
        self[code_point] = folded
        return folded


_TABLE = _FoldTable()


@dataclass(frozen=True)
class Canonical:
    """``text`` is the canonical view of ``original``; :meth:`original_span` maps a span of it back."""

    original: str
    text: str

    @property
    def identity(self) -> bool:
        return self.text is self.original

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The original characters that text[start:end] came from, and the removed (invisible) ones between and
        right around them: a bidi isolate around the item goes with it."""
        if self.identity:
            return start, end
        starts, ends = self._offsets()
        if end <= start:
            return starts[start], starts[start]
        return (ends[start - 1] if start else 0), starts[end]

    def _offsets(self) -> tuple[list[int], list[int]]:
        cached = self.__dict__.get("_offset_cache")
        if cached is None:
            cached = _offsets(self.original, len(self.text))
            object.__setattr__(self, "_offset_cache", cached)
        return cached


def _offsets(original: str, length: int) -> tuple[list[int], list[int]]:
    """For each canonical character: the start and end of the original character it came from. ``starts`` has
    one more entry, len(original), so that an empty span at the end maps too."""
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    for m in _NON_ASCII.finditer(original):
        a = m.start()
        if a > pos:  # an ASCII stretch maps one to one
            starts.extend(range(pos, a))
            ends.extend(range(pos + 1, a + 1))
        for i in range(a, m.end()):
            n = len(_TABLE[ord(original[i])])
            if n:
                starts.extend([i] * n)
                ends.extend([i + 1] * n)
        pos = m.end()
    if pos < len(original):
        starts.extend(range(pos, len(original)))
        ends.extend(range(pos + 1, len(original) + 1))
    assert len(starts) == length, "canonical text and its offset map disagree"
    starts.append(len(original))
    return starts, ends


def canonical(text: str) -> Canonical:
    if text.isascii():
        return Canonical(text, text)
    # only the non-ASCII stretches need the table: most text is mostly ASCII
    return Canonical(text, _NON_ASCII.sub(_fold_stretch, text))


def _fold_stretch(m: re.Match[str]) -> str:
    return m.group().translate(_TABLE)
