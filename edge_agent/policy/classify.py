"""Classifying a request's text: the validated detectors, plus the federated sensitivity classifier when one is
configured. Decides nothing itself: the class comes from :func:`edge_agent.policy.routing.classify_findings`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from edge_agent.config import BUILTIN_DETECTORS, PolicyConfig
from edge_agent.errors import AgentError
from edge_agent.policy.detectors import Detectors, redact
from edge_agent.policy.routing import Classification, DataClassPolicy, classify_findings

log = logging.getLogger(__name__)


class ClassifierModelError(AgentError):
    """The configured sensitivity classifier cannot be used."""


class SensitivityModel:
    """The ONNX model the federated task `sensitivity` exports: hashed n-gram features -> probability."""

    def __init__(self, path: str):
        try:
            import onnxruntime as ort

            from federated.tasks import sensitivity
        except ImportError as exc:
            raise ClassifierModelError(f"policy.classifier_model needs onnxruntime and numpy ({exc})") from exc
        if not Path(path).is_file():
            raise ClassifierModelError(f"policy.classifier_model: {path} is not a file")
        try:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1  # one prompt per call: a thread pool costs more than it saves
            self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ClassifierModelError(f"policy.classifier_model: onnxruntime cannot load {path}: {exc}") from exc
        inputs = self._session.get_inputs()
        featurizer = self._session.get_modelmeta().custom_metadata_map.get("edgefleet.featurizer", "")
        expected = f"hashed-ngrams-crc32-{sensitivity.DIMENSIONS}"
        if [i.name for i in inputs] != ["features"] or inputs[0].shape[-1] != sensitivity.DIMENSIONS or featurizer != expected:
            raise ClassifierModelError(
                f"policy.classifier_model: {path} is not a sensitivity classifier (expected input 'features' "
                f"[N, {sensitivity.DIMENSIONS}] and featurizer {expected!r}, got "
                f"{[(i.name, i.shape) for i in inputs]} and {featurizer!r})")
        self._featurize = sensitivity.featurize
        self.path = path

    def score(self, text: str) -> float:
        (probability,) = self._session.run(["probability"], {"features": self._featurize(text)[None, :]})
        return float(probability[0])


class PromptClassifier:
    def __init__(self, config: PolicyConfig):
        self.policy = DataClassPolicy.from_config(config)
        self.detectors = Detectors([n for n in BUILTIN_DETECTORS if getattr(config.detectors, n)], config.custom)
        self.model = SensitivityModel(config.classifier_model) if config.classifier_model else None
        if self.model:
            log.info("sensitivity classifier %s: a score >= %.2f makes a prompt '%s'", self.model.path,
                     config.classifier_threshold, config.classifier_class)

    def classify(self, texts: Sequence[str]) -> Classification:
        fired: set[str] = set()
        for text in texts:
            fired |= self.detectors.fired(text)
        score = self.model.score("\n".join(texts)) if self.model else None
        return classify_findings(self.policy, fired, score)

    def redact(self, text: str) -> str:
        return redact(text, self.detectors.find(text))
