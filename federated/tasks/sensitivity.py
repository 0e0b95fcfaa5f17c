"""Task `sensitivity`: a prompt sensitivity classifier, federated logistic regression.

Features are hashed word unigrams/bigrams and character 3-grams (crc32, so every
node and the agent's router hash alike); the model is one weight per bucket plus
a bias. Each round a node starts from the global weights, runs a few epochs of
full-batch gradient descent on its own labeled prompts, and contributes the new
weights; SecAgg+ sums them and FedAvg divides. Every node weighs the same:
Flower sends the weight unmasked, and a node's number of labeled prompts is its
own business.
"""

from __future__ import annotations

import re
import zlib
from typing import Mapping

import numpy as np

from federated import local_data
from federated.tasks import Arrays, LocalUpdate, TaskError

DIMENSIONS = 1 << 14
ONNX_TOLERANCE = 1e-5
# Texts the exported model is checked on against numpy (any text works: this compares two runtimes).
PROBE_TEXTS = ["my card number is 4111 1111 1111 1111", "what is the capital of France?",
               "patient John Doe, DOB 1980-01-01, diagnosis", "write a haiku about spring", ""]
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
        trigrams = np.array([zlib.crc32(f"c:{padded[i:i + 3]}".encode("utf-8")) for i in range(len(padded) - 2)],
                            dtype=np.uint32)
    # "b:A B" continues the CRC of "b:A " with B, so each word's lead is hashed once.
    leads = [zlib.crc32(w + b" ", _BIGRAM_CRC) for w in words[:-1]]
    hashes = [zlib.crc32(w, _WORD_CRC) for w in words] + [zlib.crc32(b, lead) for lead, b in zip(leads, words[1:])]
    buckets = np.concatenate([np.array(hashes, dtype=np.uint32), trigrams]) & np.uint32(_MASK)
    vector = np.bincount(buckets, minlength=DIMENSIONS).astype(np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


def featurize_all(texts: list[str]) -> np.ndarray:
    return np.stack([featurize(t) for t in texts]) if texts else np.zeros((0, DIMENSIONS), np.float32)


def predict(weights: np.ndarray, bias: float, features: np.ndarray) -> np.ndarray:
    """Probability that each row is sensitive."""
    return 1.0 / (1.0 + np.exp(-(features @ weights + bias)))


def train(weights: np.ndarray, bias: float, features: np.ndarray, labels: np.ndarray, *,
          epochs: int, learning_rate: float, l2: float) -> tuple[np.ndarray, float]:
    """Full-batch gradient descent on the logistic loss with L2, from the given start."""
    weights = weights.astype(np.float64).copy()
    count = len(labels)
    for _ in range(epochs):
        error = predict(weights, bias, features) - labels
        weights -= learning_rate * (features.T @ error / count + l2 * weights)
        bias -= learning_rate * float(error.mean())
    return weights, bias


class SensitivityTask:
    name = "sensitivity"
    clipping_range = 8.0
    # Flower's defaults: a step of 3.8e-6 is far below what moves a probability.
    quantization_range = 1 << 22
    modulus_range = 1 << 32

    def initial_arrays(self, config: Mapping[str, object]) -> Arrays:
        return [np.zeros(DIMENSIONS, np.float32), np.zeros(1, np.float32)]

    def local_update(self, data_dir, global_arrays: Arrays, config: Mapping[str, object]) -> LocalUpdate:
        weights, bias = _unpack(global_arrays)
        examples = local_data.read_examples(data_dir)
        labels = np.array([e.label for e in examples], dtype=np.float64)
        features = featurize_all([e.text for e in examples])
        new_weights, new_bias = train(weights, bias, features, labels,
                                      epochs=int(config.get("local-epochs", 20)),
                                      learning_rate=float(config.get("learning-rate", 2.0)),
                                      l2=float(config.get("l2", 1e-4)))
        limit = self.clipping_range
        clipped = int(np.sum(np.abs(new_weights) > limit) + (abs(new_bias) > limit))
        arrays = [np.clip(new_weights, -limit, limit).astype(np.float32),
                  np.clip(np.array([new_bias]), -limit, limit).astype(np.float32)]
        accuracy = float(np.mean((predict(arrays[0], float(arrays[1][0]), features) >= 0.5) == labels))
        return LocalUpdate(arrays, weight=1, local_metrics={
            "examples": float(len(examples)), "train_accuracy": accuracy, "clipped_values": float(clipped)})

    def finish(self, aggregated: Arrays, config: Mapping[str, object], nodes: int) -> dict:
        weights, bias = _unpack(aggregated)
        model = export_onnx(weights, bias)
        difference = check_onnx(model, weights, bias, PROBE_TEXTS)
        if difference > ONNX_TOLERANCE:
            raise TaskError(f"the exported ONNX model differs from the numpy model by {difference:.2e}")
        return {"kind": "onnx", "onnx": model, "weights": weights, "bias": bias, "onnx_max_difference": difference}


def _unpack(arrays: Arrays) -> tuple[np.ndarray, float]:
    if len(arrays) != 2 or arrays[0].shape != (DIMENSIONS,) or arrays[1].shape != (1,):
        shapes = [a.shape for a in arrays]
        raise TaskError(f"sensitivity parameters must be [({DIMENSIONS},), (1,)], got {shapes}")
    return arrays[0].astype(np.float32), float(arrays[1][0])


def export_onnx(weights: np.ndarray, bias: float) -> bytes:
    """The classifier as ONNX: input `features` float[N, DIMENSIONS] -> `probability` float[N]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "weights"], ["logit_raw"]),
         helper.make_node("Add", ["logit_raw", "bias"], ["logit"]),
         helper.make_node("Sigmoid", ["logit"], ["probability"])],
        "sensitivity_classifier",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", DIMENSIONS])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch"])],
        initializer=[numpy_helper.from_array(weights.astype(np.float32), "weights"),
                     numpy_helper.from_array(np.array(bias, dtype=np.float32), "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="edgefleet-federated")
    model.ir_version = 8  # readable by onnxruntime builds as old as JetPack 6's
    model.metadata_props.add(key="edgefleet.featurizer", value=f"hashed-ngrams-crc32-{DIMENSIONS}")
    onnx.checker.check_model(model)
    return model.SerializeToString()


def check_onnx(onnx_bytes: bytes, weights: np.ndarray, bias: float, texts: list[str]) -> float:
    """Largest difference between onnxruntime's and numpy's probabilities on these texts."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    features = featurize_all(texts)
    (onnx_probability,) = session.run(["probability"], {"features": features})
    return float(np.max(np.abs(onnx_probability - predict(weights, bias, features))))
