"""Inference engines: ``llama`` (llama.cpp, GGUF) and ``onnx`` (onnxruntime encoders).

Generation goes through :class:`edge_agent.scheduler.Backend` (the llama
engine); embeddings through :class:`EmbeddingEngine`, which both engines
implement, so the service does not care which one is configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from edge_agent.errors import AgentError

EmbeddingInput = str | list[int]


class EngineInputError(AgentError):
    """An input this engine cannot take; ``index`` says which one."""

    def __init__(self, message: str, index: int, code: str = "invalid_value"):
        super().__init__(message)
        self.index = index
        self.code = code


class EmbeddingEngine(Protocol):
    engine_name: str

    def embed_inputs(self, inputs: Sequence[EmbeddingInput]) -> tuple[list[list[float]], int]:
        """One vector per input, and the number of tokens read; raises EngineInputError."""
