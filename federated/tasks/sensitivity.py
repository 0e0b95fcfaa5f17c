"""Task `sensitivity`: a prompt sensitivity classifier, federated logistic regression.

Features are hashed word unigrams/bigrams and character 3-grams (`edgefleet.featurize`,
which the agent's router runs too, so every node and the router hash alike); the model
is one weight per bucket plus a bias. Each round a node starts from the global weights,
runs a few epochs of full-batch gradient descent on its own labeled prompts, and
contributes the new weights; SecAgg+ sums them and FedAvg divides. Every node weighs the
same: Flower sends the weight unmasked, and a node's number of labeled prompts is its
own business.
"""

from __future__ import annotations

import numpy as np

from edgefleet.featurize import DIMENSIONS, FEATURIZER, featurize_all
from federated import local_data
from federated.errors import TaskError
from federated.tasks.base import Arrays, LocalUpdate, RunConfig

ONNX_TOLERANCE = 1e-5
# Texts the exported model is checked on against numpy (any text works: this compares two runtimes).
PROBE_TEXTS = [
    "my card number is 4111 1111 1111 1111",
    "what is the capital of France?",
    "patient John Doe, DOB 1980-01-01, diagnosis",
    "write a haiku about spring",
    "",
]


def predict(weights: np.ndarray, bias: float, features: np.ndarray) -> np.ndarray:
    """Probability that each row is sensitive."""
    return 1.0 / (1.0 + np.exp(-(features @ weights + bias)))


def train(
    weights: np.ndarray,
    bias: float,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    learning_rate: float,
    l2: float,
) -> tuple[np.ndarray, float]:
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

    def initial_arrays(self, config: RunConfig) -> Arrays:
        return [np.zeros(DIMENSIONS, np.float32), np.zeros(1, np.float32)]

    def local_update(self, data_dir, global_arrays: Arrays, config: RunConfig) -> LocalUpdate:
        weights, bias = _unpack(global_arrays)
        examples = local_data.read_examples(data_dir)
        labels = np.array([e.label for e in examples], dtype=np.float64)
        features = featurize_all([e.text for e in examples])
        new_weights, new_bias = train(
            weights,
            bias,
            features,
            labels,
            epochs=int(config.get("local-epochs", 20)),
            learning_rate=float(config.get("learning-rate", 2.0)),
            l2=float(config.get("l2", 1e-4)),
        )
        limit = self.clipping_range
        clipped = int(np.sum(np.abs(new_weights) > limit) + (abs(new_bias) > limit))
        arrays = [
            np.clip(new_weights, -limit, limit).astype(np.float32),
            np.clip(np.array([new_bias]), -limit, limit).astype(np.float32),
        ]
        accuracy = float(np.mean((predict(arrays[0], float(arrays[1][0]), features) >= 0.5) == labels))
        return LocalUpdate(
            arrays,
            weight=1,
            local_metrics={
                "examples": float(len(examples)),
                "train_accuracy": accuracy,
                "clipped_values": float(clipped),
            },
        )

    def finish(self, aggregated: Arrays, config: RunConfig, nodes: int) -> dict:
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
        [
            helper.make_node("MatMul", ["features", "weights"], ["logit_raw"]),
            helper.make_node("Add", ["logit_raw", "bias"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["probability"]),
        ],
        "sensitivity_classifier",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", DIMENSIONS])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch"])],
        initializer=[
            numpy_helper.from_array(weights.astype(np.float32), "weights"),
            numpy_helper.from_array(np.array(bias, dtype=np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgefleet-federated")
    model.ir_version = 8  # readable by onnxruntime builds as old as JetPack 6's
    model.metadata_props.add(key="edgefleet.featurizer", value=FEATURIZER)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def check_onnx(onnx_bytes: bytes, weights: np.ndarray, bias: float, texts: list[str]) -> float:
    """Largest difference between onnxruntime's and numpy's probabilities on these texts."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    features = featurize_all(texts)
    (onnx_probability,) = session.run(["probability"], {"features": features})
    return float(np.max(np.abs(onnx_probability - predict(weights, bias, features))))
