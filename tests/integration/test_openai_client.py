"""The unmodified openai client against a real agent on the real models."""

import httpx
import openai
import pytest

SMOL = "smollm2-135m-instruct"


def test_chat_completion(smol_agent):
    r = smol_agent.client().chat.completions.create(
        model=SMOL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=12, temperature=0
    )
    choice = r.choices[0]
    assert r.object == "chat.completion" and r.model == SMOL
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_completion_streaming(smol_agent):
    """A streamed answer assembles to the same message a plain request gets
    (here from the cache, which stored the stream's answer)."""
    client = smol_agent.client()
    messages = [{"role": "user", "content": "Name three colours."}]
    stream = client.chat.completions.create(
        model=SMOL, messages=messages, max_tokens=20, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    raw = client.chat.completions.with_raw_response.create(model=SMOL, messages=messages, max_tokens=20, temperature=0)
    plain = raw.parse()
    assert raw.headers["x-cache"] == "hit"
    assert text and text == plain.choices[0].message.content
    assert finish == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_completion_with_max_tokens_ends_with_length(smol_agent):
    r = smol_agent.client().completions.create(model=SMOL, prompt="Once upon a time", max_tokens=7, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 7 and r.choices[0].text


def test_completion_streaming(smol_agent):
    stream = smol_agent.client().completions.create(
        model=SMOL, prompt="The sky is", max_tokens=8, temperature=0.7, seed=11, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_stop_sequence_is_honoured_and_not_returned(smol_agent):
    client = smol_agent.client()
    full = client.completions.create(model=SMOL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0).choices[0].text
    stop = full.strip()[:2]
    assert stop, full
    r = client.completions.create(
        model=SMOL,
        prompt="1, 2, 3, 4,",
        max_tokens=12,
        temperature=0,
        stop=[stop],
        extra_headers={"Cache-Control": "no-store"},
    )
    assert stop not in r.choices[0].text
    assert r.choices[0].finish_reason == "stop"
    assert full.startswith(r.choices[0].text)


def test_same_seed_gives_same_sample(smol_agent):
    client = smol_agent.client()
    kwargs = dict(
        model=SMOL,
        prompt="A list of fruits:",
        max_tokens=10,
        temperature=0.9,
        seed=1234,
        extra_headers={"Cache-Control": "no-store"},
    )
    assert client.completions.create(**kwargs).choices[0].text == client.completions.create(**kwargs).choices[0].text


def test_ignore_eos_generates_exactly_max_tokens(smol_agent):
    r = smol_agent.client().completions.create(
        model=SMOL, prompt="The end.", max_tokens=40, temperature=1.0, extra_body={"ignore_eos": True}
    )
    assert r.usage.completion_tokens == 40 and r.choices[0].finish_reason == "length"


def test_models_lists_the_served_model(smol_agent):
    models = smol_agent.client().models.list().data
    assert [m.id for m in models] == [SMOL]


def test_llama_embeddings(smol_agent):
    r = smol_agent.client().embeddings.create(model=SMOL, input=["hello world", "goodbye"])
    assert [d.index for d in r.data] == [0, 1]
    assert len(r.data[0].embedding) == 576  # SmolLM2-135M's hidden size
    assert r.data[0].embedding != r.data[1].embedding
    assert r.usage.prompt_tokens > 0


def test_gemma_base_model_completes_text(gemma_agent):
    r = gemma_agent.client().completions.create(
        model="gemma-3-270m", prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert r.choices[0].text and r.usage.completion_tokens > 0


def test_gemma_has_no_chat_template_and_says_so(gemma_agent):
    with pytest.raises(openai.BadRequestError) as info:
        gemma_agent.client().chat.completions.create(
            model="gemma-3-270m", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    assert "no chat template" in info.value.message and "/v1/completions" in info.value.message
    assert httpx.get(gemma_agent.base_url + "/readyz").status_code == 200


def test_gemma_is_assembled_and_verified_in_the_data_dir(gemma_agent):
    from edge_agent.models import _gemma_expected_sha256, sha256_file

    assembled = gemma_agent.data_dir / "models" / "gemma-3-270m-q4_k_m.gguf"
    assert sha256_file(assembled) == _gemma_expected_sha256()
    info = [k for k in gemma_agent.metrics() if k.startswith("edgefleet_model_info")]
    assert len(info) == 1 and _gemma_expected_sha256() in info[0] and 'engine="llama_cpp"' in info[0]
