"""The onnx engine: a real onnxruntime session on an encoder the test builds.

No ONNX encoder ships on PyPI without a hub download, so the test makes a
small one with the onnx helper API (an embedding table, looked up with
Gather) and a word-level tokenizer with the tokenizers library, then checks
the agent's answers against numpy on the same weights.
"""

import numpy as np
import onnx
import openai
import pytest

from agent_process import start_agent


def build_encoder(directory):
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "[PAD]": 1, "hello": 2, "world": 3, "edge": 4, "fleet": 5}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.enable_padding(pad_id=1, pad_token="[PAD]")
    tokenizer.save(str(directory / "tokenizer.json"))

    table = np.random.default_rng(7).standard_normal((len(vocab), 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["last_hidden_state"], axis=0)],
        "tiny-encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", 8])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(directory / "encoder.onnx"))
    return table, vocab


def test_onnx_embeddings_are_mean_pooled_encoder_outputs(tmp_path):
    table, vocab = build_encoder(tmp_path)
    agent = start_agent(
        tmp_path / "data",
        sections={
            "embeddings": {
                "engine": "onnx",
                "onnx_model": str(tmp_path / "encoder.onnx"),
                "onnx_tokenizer": str(tmp_path / "tokenizer.json"),
            }
        },
    )
    try:
        r = agent.client().embeddings.create(model="smollm2-135m-instruct", input=["hello world", "edge fleet edge"])
        expected = [
            table[[vocab["hello"], vocab["world"]]].mean(axis=0),
            table[[vocab["edge"], vocab["fleet"], vocab["edge"]]].mean(axis=0),
        ]
        for got, want in zip(r.data, expected, strict=True):
            np.testing.assert_allclose(got.embedding, want, rtol=1e-5, atol=1e-6)
        assert r.usage.prompt_tokens == 5
        providers = [k for k in agent.metrics() if k.startswith("edgefleet_onnx_provider_info")]
        assert any('provider="CPUExecutionProvider"' in p for p in providers)
        assert "onnx engine" in agent.log() and "CPUExecutionProvider" in agent.log()
        with pytest.raises(openai.BadRequestError, match="takes text input, not token ids"):
            agent.client().embeddings.create(model="smollm2-135m-instruct", input=[[2, 3]])
    finally:
        agent.stop()


def test_provider_order_prefers_tensorrt_then_cuda_then_cpu():
    from edge_agent.engines.onnx import choose_providers

    assert choose_providers(["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]) == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(["CoreMLExecutionProvider"]) == ["CoreMLExecutionProvider"]
