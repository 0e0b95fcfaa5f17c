"""Value objects for one generation, and the pure text logic around it.

The scheduler thread produces :class:`TokenEvent` / :class:`DoneEvent` /
:class:`ErrorEvent` for each request; the HTTP layer turns them into OpenAI
responses. :class:`StopMatcher` and :class:`Utf8Assembler` are pure and
unit-tested: they decide what text a client sees.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    # llama-server's defaults: a top-k cut first keeps sampling off the full
    # vocabulary (gemma-3 has 262,144 tokens).
    top_k: int = 40
    min_p: float = 0.05
    seed: int | None = None
    # llama.cpp's extension: never end at an end-of-generation token.
    ignore_eos: bool = False
    # A GBNF grammar (root rule "root") every sampled token must keep valid: structured outputs and tools.
    grammar: str | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class GenerationRequest:
    prompt_tokens: tuple[int, ...]
    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    # time.monotonic() value after which the request is abandoned.
    deadline: float = float("inf")
    # Choices generated from the one prompt (OpenAI's n): the prompt is decoded once and its KV cells copied.
    n: int = 1
    # None: no log-probabilities; k >= 0: each token's log-probability and the k most likely alternatives.
    logprobs: int | None = None


@dataclass(frozen=True)
class TopLogprob:
    piece: bytes
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability under the model's raw distribution (before temperature,
    top-k/p and grammar), with the ``k`` most likely tokens at that position, most likely first."""

    token: int
    piece: bytes
    logprob: float
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class TokenEvent:
    """New text for the client (possibly empty while a stop string may be forming)."""

    text: str
    # Which choice (0..n-1) the text belongs to.
    index: int = 0
    # The tokens that produced this text, when the request asked for log-probabilities.
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class DoneEvent:
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    index: int = 0
    # Prompt tokens whose KV cells were reused from an earlier sequence instead of decoded.
    cached_tokens: int = 0


@dataclass(frozen=True)
class ErrorEvent:
    error: Exception


GenerationEvent: TypeAlias = TokenEvent | DoneEvent | ErrorEvent


class StopMatcher:
    """Finds stop strings across token boundaries without ever showing them.

    Text that could be the start of a stop string is held back until it is
    known not to be one.
    """

    def __init__(self, stops: Sequence[str]):
        self._stops = tuple(s for s in stops if s)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop string was hit)."""
        if not self._stops:
            return text, False
        buf = self._held + text
        first = min((i for i in (buf.find(s) for s in self._stops) if i >= 0), default=-1)
        if first >= 0:
            self._held = ""
            return buf[:first], True
        keep = self._longest_partial_suffix(buf)
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """Text held back when generation ends for another reason."""
        held, self._held = self._held, ""
        return held

    def _longest_partial_suffix(self, buf: str) -> int:
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:n]):
                    best = n
                    break
        return best


class Utf8Assembler:
    """Turns token byte pieces into text; a character split across tokens
    is emitted once complete."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        return self._decoder.decode(piece)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
