"""The onnxruntime engine: text embeddings from an ONNX encoder.

Execution providers are taken in the order TensorRT > CUDA > CPU, limited to
what the installed onnxruntime build offers (``onnxruntime`` for CPU boxes,
``onnxruntime-gpu`` or NVIDIA's Jetson build for GPUs); the choice is logged
and exported in /metrics. Inputs are tokenized with a Hugging Face
``tokenizers`` JSON file; a [batch, seq, hidden] output is mean-pooled over
the attention mask, a [batch, hidden] output is used as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from edge_agent.engines import EmbeddingInput, EngineInputError
from edge_agent.errors import AgentError

log = logging.getLogger(__name__)

PROVIDER_PRIORITY = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxEngineError(AgentError):
    """onnxruntime is missing or refused the model."""


def choose_providers(available: Sequence[str]) -> list[str]:
    """The providers to ask for, best first, among those the build has."""
    chosen = [p for p in PROVIDER_PRIORITY if p in available]
    return chosen or list(available)


class OnnxEmbedder:
    engine_name = "onnx"

    def __init__(self, model_path: str, tokenizer_path: str, max_length: int = 512):
        try:
            import numpy as np
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise OnnxEngineError(
                f"the onnx engine needs onnxruntime and tokenizers ({exc}); install edgefleet[cpu] or edgefleet[gpu]"
            ) from exc
        self._np = np
        for key, path in (("embeddings.onnx_model", model_path), ("embeddings.onnx_tokenizer", tokenizer_path)):
            if not Path(path).is_file():
                raise OnnxEngineError(f"{key}: {path} is not a file")
        try:
            self._tokenizer = Tokenizer.from_file(tokenizer_path)
        except Exception as exc:
            raise OnnxEngineError(f"embeddings.onnx_tokenizer: cannot read {tokenizer_path}: {exc}") from exc
        self._tokenizer.enable_truncation(max_length)
        self._tokenizer.enable_padding()
        try:
            self._session = ort.InferenceSession(model_path, providers=choose_providers(ort.get_available_providers()))
        except Exception as exc:
            raise OnnxEngineError(f"embeddings.onnx_model: onnxruntime cannot load {model_path}: {exc}") from exc
        self.providers = list(self._session.get_providers())
        self._input_names = [i.name for i in self._session.get_inputs()]
        unknown = set(self._input_names) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown or "input_ids" not in self._input_names:
            raise OnnxEngineError(
                f"embeddings.onnx_model: expected inputs input_ids[, attention_mask, token_type_ids], "
                f"{model_path} has {', '.join(self._input_names)}"
            )
        log.info("onnx engine: %s on %s", model_path, ", ".join(self.providers))

    def embed_inputs(self, inputs: Sequence[EmbeddingInput]) -> tuple[list[list[float]], int]:
        """EmbeddingEngine: text only, since token ids belong to another tokenizer."""
        texts: list[str] = []
        for i, item in enumerate(inputs):
            if not isinstance(item, str):
                raise EngineInputError("the ONNX embeddings engine takes text input, not token ids", i)
            texts.append(item)
        return self.embed(texts)

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        np = self._np
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        outputs = self._session.run(None, {name: feeds[name] for name in self._input_names})
        hidden = outputs[0]
        if hidden.ndim == 3:
            weights = mask[:, :, None].astype(hidden.dtype)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        else:
            pooled = hidden
        return pooled.astype(float).tolist(), int(mask.sum())
