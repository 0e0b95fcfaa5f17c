"""The prompt classifier with the federated sensitivity model: a real ONNX file exported by the federated task,
run by onnxruntime, its score combined with the detectors'."""

import numpy as np
import pytest

from edge_agent.config import PolicyConfig
from edge_agent.policy.classify import ClassifierModelError, PromptClassifier
from edgefleet import featurize
from federated.tasks import sensitivity

SENSITIVE = ["patient diagnosis oncology report", "diagnosis for the patient in ward 3", "oncology patient notes"]
BENIGN = ["write a haiku about spring", "what is the capital of France", "a recipe for tomato soup"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A classifier trained here on a few labeled prompts, exported exactly as a federated run exports it."""
    features = featurize.featurize_all(SENSITIVE + BENIGN)
    labels = np.array([1.0] * len(SENSITIVE) + [0.0] * len(BENIGN))
    weights, bias = sensitivity.train(
        np.zeros(featurize.DIMENSIONS), 0.0, features, labels, epochs=300, learning_rate=2.0, l2=0.0
    )
    path = tmp_path_factory.mktemp("classifier") / "sensitivity.onnx"
    path.write_bytes(sensitivity.export_onnx(weights, bias))
    return str(path)


def test_the_classifier_score_raises_a_prompt_no_detector_fires_on(model_path):
    classifier = PromptClassifier(PolicyConfig(classifier_model=model_path, classifier_threshold=0.5))
    flagged = classifier.classify(["notes on the patient diagnosis"])
    assert (flagged.data_class, flagged.detectors) == ("internal", ("classifier",))
    assert classifier.model.score("notes on the patient diagnosis") >= 0.5
    plain = classifier.classify(["a haiku about tomato soup"])
    assert (plain.data_class, plain.detectors) == ("public", ())


def test_detectors_and_classifier_together_take_the_most_sensitive_class(model_path):
    classifier = PromptClassifier(PolicyConfig(classifier_model=model_path))
    both = classifier.classify(["patient diagnosis", "card 4111 1111 1111 1111"])
    assert both.data_class == "restricted" and both.detectors == ("card", "classifier")


def test_a_file_that_is_not_a_sensitivity_classifier_is_refused_at_start(tmp_path, model_path):
    missing = tmp_path / "missing.onnx"
    with pytest.raises(ClassifierModelError, match="is not a file"):
        PromptClassifier(PolicyConfig(classifier_model=str(missing)))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not onnx at all")
    with pytest.raises(ClassifierModelError, match="onnxruntime cannot load"):
        PromptClassifier(PolicyConfig(classifier_model=str(garbage)))


def test_an_onnx_model_of_another_shape_is_refused_with_what_was_expected(tmp_path):
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input_ids"], ["out"])],
        "other",
        [helper.make_tensor_value_info("input_ids", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "other.onnx"
    save(model, str(path))
    with pytest.raises(ClassifierModelError, match="is not a sensitivity classifier"):
        PromptClassifier(PolicyConfig(classifier_model=str(path)))


# --- without a model: failing closed, items split across texts, redaction ----------------------------------------
def test_a_failure_while_classifying_makes_the_request_the_most_sensitive_class(monkeypatch, caplog):
    """Tried: the detectors raising (a stand-in for any bug in normalizing or detecting) on public text."""
    failures = []
    classifier = PromptClassifier(PolicyConfig(), on_failure=failures.append)

    def broken(text):
        raise IndexError("a bug in a detector")

    monkeypatch.setattr(classifier.detectors, "fired", broken)
    for _ in range(2):
        result = classifier.classify(["write a haiku about spring"])
        assert result.data_class == "restricted" and result.detectors == ("classification_failed",)
    assert failures == ["IndexError", "IndexError"]  # every one counted


def test_an_item_split_across_messages_or_stop_strings_is_seen_whole():
    classifier = PromptClassifier(PolicyConfig())
    assert classifier.classify(["Pay with 4111 1111", "1111 1111 please"]).data_class == "restricted"
    assert classifier.classify(["hello", "4111 1111"]).data_class == "public"


def test_redaction_leaves_nothing_a_detector_finds_in_the_original_characters():
    classifier = PromptClassifier(PolicyConfig())
    text = (
        "Mail ｊｏ＠ｅｘａｍｐｌｅ．ｃｏｍ, "
        "card 4111\u200b1111\u200b1111\u200b1111, tel +44\u00a020\u00a07946\u00a00958."
    )
    redacted = classifier.redact(text)
    assert redacted == "Mail [EMAIL], card [CARD], tel [PHONE]."
    assert classifier.classify([redacted]).data_class == "public"
