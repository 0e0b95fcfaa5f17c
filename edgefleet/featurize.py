"""The prompt featurizer shared by the federated task `sensitivity` (training) and the agent's router (scoring).

Both sides must hash a prompt bucket for bucket alike, so it lives here, below both. A model
trained on these features records :data:`FEATURIZER` in its metadata; the agent refuses a
model whose featurizer differs.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

DIMENSIONS = 1 << 14
# What an exported model's `edgefleet.featurizer` metadata says it was trained on.
FEATURIZER = f"hashed-ngrams-crc32-{DIMENSIONS}"

_WORD = re.compile(r"\w+", re.UNICODE)
_WORD_BYTES = re.compile(rb"\w+")


def _crc32_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table[n] = c
    return table


_CRC_TABLE = _crc32_table()
# zlib.crc32(data, start) continues a CRC, so each kind's prefix ("w:", "b:", "c:") is hashed once.
_WORD_CRC, _BIGRAM_CRC = zlib.crc32(b"w:"), zlib.crc32(b"b:")
_MASK = DIMENSIONS - 1


def _trigram_pair_table() -> np.ndarray:
    """The CRC-32 register after "c:" and two more bytes, for every pair of bytes (index first * 256 + second)."""
    after_prefix = np.uint32(~zlib.crc32(b"c:") & 0xFFFFFFFF)  # zlib returns the register inverted
    byte = np.arange(256, dtype=np.uint32)
    one = (after_prefix >> np.uint32(8)) ^ _CRC_TABLE[(after_prefix ^ byte) & np.uint32(0xFF)]
    return ((one[:, None] >> np.uint32(8)) ^ _CRC_TABLE[(one[:, None] ^ byte[None, :]) & np.uint32(0xFF)]).reshape(-1)


_TRIGRAM_PAIRS = _trigram_pair_table()


def featurize(text: str) -> np.ndarray:
    """L2-normalised hashed counts of words ``w:WORD``, word pairs ``b:A B`` and character trigrams ``c:XYZ``
    of the lowercased text, each bucket ``crc32(utf-8 feature) mod DIMENSIONS``.

    The router runs this on every prompt, so it is fast: the trigrams of ASCII text, most of the work, are
    hashed together with numpy (the CRC-32 register after "c:" and a trigram's first two bytes comes from a
    table, the third byte is one step over all positions at once); the result is bucket-for-bucket that of
    hashing each feature string with zlib.
    """
    lowered = text.lower()
    padded = f" {lowered} "
    if padded.isascii():
        data = padded.encode("ascii")
        words = _WORD_BYTES.findall(data)  # \w on ASCII bytes matches what it matches in ASCII text
        array = np.frombuffer(data, dtype=np.uint8)
        register = _TRIGRAM_PAIRS[(array[:-2].astype(np.intp) << 8) | array[1:-1]]
        register = (register >> 8) ^ _CRC_TABLE[(register ^ array[2:]) & 0xFF]
        trigrams = ~register
    else:  # a character is not a byte here: hash each trigram's UTF-8
        words = [w.encode("utf-8") for w in _WORD.findall(lowered)]
        trigrams = np.array(
            [zlib.crc32(f"c:{padded[i : i + 3]}".encode()) for i in range(len(padded) - 2)], dtype=np.uint32
        )
    # "b:A B" continues the CRC of "b:A " with B, so each word's lead is hashed once.
    leads = [zlib.crc32(w + b" ", _BIGRAM_CRC) for w in words[:-1]]
    hashes = [zlib.crc32(w, _WORD_CRC) for w in words] + [
        zlib.crc32(b, lead) for lead, b in zip(leads, words[1:], strict=True)
    ]
    buckets = np.concatenate([np.array(hashes, dtype=np.uint32), trigrams]) & np.uint32(_MASK)
    vector = np.bincount(buckets, minlength=DIMENSIONS).astype(np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


def featurize_all(texts: list[str]) -> np.ndarray:
    return np.stack([featurize(t) for t in texts]) if texts else np.zeros((0, DIMENSIONS), np.float32)
