"""Classifying a request's text: the validated detectors, plus the federated sensitivity classifier when one is
configured. Decides nothing itself: the class comes from :func:`edge_agent.policy.routing.classify_findings`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from edge_agent.config import BUILTIN_DETECTORS, PolicyConfig
from edge_agent.errors import AgentError
from edge_agent.policy.detectors import Detectors, redact
from edge_agent.policy.routing import Classification, DataClassPolicy, classify_findings

# What a Classification's detectors hold when classifying failed.
FAILED_CLASSIFICATION = "classification_failed"

log = logging.getLogger(__name__)


class ClassifierModelError(AgentError):
    """The configured sensitivity classifier cannot be used."""


class SensitivityModel:
    """The ONNX model the federated task `sensitivity` exports: hashed n-gram features -> probability."""

    def __init__(self, path: str):
        try:
            import onnxruntime as ort

            from edgefleet import featurize
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
        expected = featurize.FEATURIZER
        if (
            [i.name for i in inputs] != ["features"]
            or inputs[0].shape[-1] != featurize.DIMENSIONS
            or featurizer != expected
        ):
            raise ClassifierModelError(
                f"policy.classifier_model: {path} is not a sensitivity classifier (expected input 'features' "
                f"[N, {featurize.DIMENSIONS}] and featurizer {expected!r}, got "
                f"{[(i.name, i.shape) for i in inputs]} and {featurizer!r})"
            )
        self._featurize = featurize.featurize
        self.path = path

    def score(self, text: str) -> float:
        (probability,) = self._session.run(["probability"], {"features": self._featurize(text)[None, :]})
        return float(probability[0])


# Redaction passes at most. A placeholder can bring an item to light in junk text ("0@0.AA001_01.0001.AA": the
# "[US_SSN]" ends the domain an "_" spoiled), which the next pass takes; text that still has a finding after
# these passes is refused, never sent.
_REDACT_PASSES = 3
# The kinds of classification failure already logged: each kind once per process, every one counted.
_LOGGED_FAILURES: set[str] = set()


class RedactionError(AgentError):
    """Redaction did not converge: the text is not sent anywhere."""


class PromptClassifier:
    """``on_failure(kind)`` is told of every classification that failed (and so became the most sensitive
    class); the daemon counts them in ``edgefleet_classification_failures_total``."""

    def __init__(self, config: PolicyConfig, on_failure: Callable[[str], None] | None = None):
        self.policy = DataClassPolicy.from_config(config)
        self.detectors = Detectors(
            [n for n in BUILTIN_DETECTORS if getattr(config.detectors, n)], config.custom, config.phone_regions
        )
        self.model = SensitivityModel(config.classifier_model) if config.classifier_model else None
        self.on_failure = on_failure
        if self.model:
            log.info(
                "sensitivity classifier %s: a score >= %.2f makes a prompt '%s'",
                self.model.path,
                config.classifier_threshold,
                config.classifier_class,
            )

    def classify(self, texts: Sequence[str]) -> Classification:
        """The texts' data class. Fails closed: any error while normalizing, detecting or scoring makes the
        request the most sensitive class, never the default one."""
        try:
            fired: set[str] = set()
            for text in texts:
                fired |= self.detectors.fired(text)
            joined = "\n".join(texts)
            if len(texts) > 1:
                # an item split across two messages or stop strings reads as one across the line break
                fired |= self.detectors.fired(joined)
            score = self.model.score(joined) if self.model else None
            return classify_findings(self.policy, fired, score)
        except Exception as exc:  # noqa: BLE001 - whatever broke, the request must not leave as "public"
            return self._failed(exc)

    def redact(self, text: str) -> str:
        for _ in range(_REDACT_PASSES):
            spans = self.detectors.find(text)
            if not spans:
                return text
            text = redact(text, spans)
        raise RedactionError(f"redaction did not converge after {_REDACT_PASSES} passes")

    def _failed(self, exc: Exception) -> Classification:
        kind = type(exc).__name__
        if kind not in _LOGGED_FAILURES:
            _LOGGED_FAILURES.add(kind)
            log.error(
                "classifying a request failed (%s: %s); such requests are treated as class '%s' "
                "(logged once per kind, counted in edgefleet_classification_failures_total)",
                kind,
                exc,
                self.policy.class_names[-1],
                exc_info=exc,
            )
        if self.on_failure is not None:
            self.on_failure(kind)
        return Classification(self.policy.class_names[-1], (FAILED_CLASSIFICATION,))
