"""Data residency end to end: a real agent saturated on purpose, a real second agent as its upstream, real API
keys, and a real central receiving the routing summary in heartbeats; then the attack set, against an upstream
that writes down every body it receives.

The local agent decodes one sequence (model.n_parallel = 1) and queues nothing (scheduler.max_queue = 0), so a
single long generation saturates it. Its upstreams are a dead port first (its circuit opens) and then the
session's SmolLM2 agent, tagged jurisdiction "eu". The upstream agent's own routing audit is its request log:
every request it answered is there with a keyed hash of the text it received, and the detectors that fired on it.
"""

import hashlib
import json
import re
import socket
import subprocess
import sys
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from agent_process import start_agent, write_config
from central_process import create_token, edgefleet_cli, start_central, wait_for
from edge_agent.access import add_key
from edge_agent.control.client import enroll
from edge_agent.control.identity import FleetFiles
from edge_agent.policy.detectors import Detectors, redact
from edge_agent.routing_audit import RoutingAudit, read_entries
from logging_upstream import start_logging_upstream

MODEL = "smollm2-135m-instruct"
CLASSES = ("public", "internal", "restricted")
PUBLIC = [f"Name one colour of the sea, number {i}." for i in range(4)]
INTERNAL = [f"Summarise the mail from jane.doe{i}@example.com for me." for i in range(3)] + [
    "Call me back on +44 20 7946 0958 about the offsite."
]
RESTRICTED = [f"Charge the card 4111 1111 1111 1111 for order {i}." for i in range(2)] + [
    "My social security number is 123-45-6789, fill in the form.",
    "Wire it to DE89 3704 0044 0532 0130 00 today.",
]


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def central(tmp_path_factory):
    process = start_central(tmp_path_factory.mktemp("central"), "--heartbeat-interval", "0.5s")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def upstream(smol_agent):
    return smol_agent


@pytest.fixture(scope="module")
def box(tmp_path_factory, central, upstream):
    """The saturable local agent, enrolled to central, with two API keys."""
    data_dir = tmp_path_factory.mktemp("box")
    keys = data_dir / "api-keys.json"
    full, _ = add_key(keys, "acme", "restricted", rate_per_s=1000, burst=1000, class_names=CLASSES)
    limited, _ = add_key(keys, "globex", "internal", rate_per_s=1000, burst=1000, class_names=CLASSES)
    # One request per 100 s once its burst of 2 is spent: three in a row meet an empty bucket however long
    # each takes to answer on a busy machine.
    slow, _ = add_key(keys, "initech", "restricted", rate_per_s=0.01, burst=2, class_names=CLASSES)
    token = create_token(central)
    identity = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(data_dir))
    agent = start_agent(
        data_dir,
        sections={
            "model": {"n_parallel": 1},
            "scheduler": {"max_queue": 0},
            "fleet": {"max_backoff_s": 1.0, "rpc_timeout_s": 3.0},
            "policy": {},
            "policy.classes": [
                {"name": "public", "jurisdictions": ["*"]},
                {"name": "internal", "jurisdictions": ["eu"], "redact": True},
                {"name": "restricted", "jurisdictions": []},
            ],
            "upstreams": [
                {
                    "name": "dead",
                    "url": f"http://127.0.0.1:{_dead_port()}/v1",
                    "jurisdiction": "eu",
                    "connect_timeout_s": 0.5,
                    "retries": 0,
                    "failure_threshold": 2,
                    "open_s": 600.0,
                    "health_interval_s": 0.5,
                },
                {
                    "name": "eu-cloud",
                    "url": upstream.base_url + "/v1",
                    "jurisdiction": "eu",
                    "model": MODEL,
                    "models": [f"some-cloud-model={MODEL}"],
                    "timeout_s": 60.0,
                },
            ],
        },
    )
    agent.keys = {"acme": full, "globex": limited, "initech": slow}
    agent.node_id = identity.node_id
    yield agent
    agent.stop()


def _headers(key: str, **extra) -> dict:
    return {"Authorization": f"Bearer {key}", "Cache-Control": "no-store", **extra}


def _chat(agent, key: str, text: str, max_tokens: int = 4, model: str = MODEL, **extra) -> httpx.Response:
    return httpx.post(
        agent.base_url + "/v1/chat/completions",
        headers=_headers(key, **extra.pop("headers", {})),
        timeout=120,
        json={
            "model": model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "temperature": 0.7,
            **extra,
        },
    )


def _inflight(agent) -> float:
    return agent.metrics().get("edgefleet_inflight_requests", 0)


class _Saturation:
    """One long streamed generation holding the box's only sequence slot."""

    def __init__(self, agent, key):
        self.agent, self.key = agent, key
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Tell a very long story."}],
            "max_tokens": 1500,
            "ignore_eos": True,
            "temperature": 0.7,
            "stream": True,
        }
        with httpx.stream(
            "POST", self.agent.base_url + "/v1/chat/completions", json=body, timeout=300, headers=_headers(self.key)
        ) as r:
            for _ in r.iter_bytes():
                if self.stop.is_set():
                    return

    def __enter__(self):
        self.thread.start()
        wait_for(lambda: _inflight(self.agent) == 1, what="the long generation to hold the slot")
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(60)
        wait_for(lambda: _inflight(self.agent) == 0, what="the slot to be free again")


def _upstream_received(upstream, after_sequence: int):
    audit = RoutingAudit(upstream.data_dir / "audit" / "routing.db")
    try:
        return audit, audit.entries(after_sequence=after_sequence, limit=10_000)
    finally:
        audit.close()


def _upstream_head(upstream) -> int:
    audit = RoutingAudit(upstream.data_dir / "audit" / "routing.db")
    try:
        return audit.head[0]
    finally:
        audit.close()


def test_under_saturation_public_overflows_internal_leaves_redacted_restricted_never_leaves(box, upstream):
    key = box.keys["acme"]
    before = _upstream_head(upstream)
    with _Saturation(box, key):
        with ThreadPoolExecutor(6) as pool:
            public = list(pool.map(lambda t: _chat(box, key, t), PUBLIC))
            internal = list(pool.map(lambda t: _chat(box, key, t), INTERNAL))
            restricted = list(pool.map(lambda t: _chat(box, key, t), RESTRICTED))
        assert _inflight(box) == 1, "the box stayed saturated throughout"

    for r in public:
        assert r.status_code == 200, r.text
        assert (r.headers["x-edgefleet-route"], r.headers["x-edgefleet-data-class"]) == ("upstream:eu-cloud", "public")
        assert r.json()["choices"][0]["message"]["role"] == "assistant"
    for r in internal:
        assert r.status_code == 200, r.text
        assert (r.headers["x-edgefleet-route"], r.headers["x-edgefleet-data-class"]) == (
            "upstream:eu-cloud",
            "internal",
        )
    for r in restricted:
        assert r.status_code == 429, r.text
        assert (r.headers["x-edgefleet-route"], r.headers["x-edgefleet-data-class"]) == ("refused", "restricted")
        assert r.headers["retry-after"] == "1"
        assert "'restricted' never leaves this box" in r.json()["error"]["message"]

    # The upstream's own request log: exactly the public prompts and the redacted internal ones, nothing else.
    audit, received = _upstream_received(upstream, before)
    detectors = Detectors(["email", "phone", "card", "iban", "us_ssn"])
    redacted = [redact(t, detectors.find(t)) for t in INTERNAL]
    assert all("[EMAIL]" in t or "[PHONE]" in t for t in redacted)
    assert sorted(e.prompt_hash for e in received) == sorted(audit.prompt_hash(t) for t in PUBLIC + redacted)
    assert all(e.detectors == () and e.data_class == "public" for e in received), "nothing sensitive arrived"
    leaked = {audit.prompt_hash(t) for t in RESTRICTED + INTERNAL} & {e.prompt_hash for e in received}
    assert not leaked

    # The box's metrics and its own audit agree.
    m = box.metrics()
    assert m['edgefleet_routed_requests_total{data_class="restricted",route="refused"}'] >= 4
    assert m['edgefleet_routed_requests_total{data_class="public",route="upstream:eu-cloud"}'] >= 4
    assert m['edgefleet_routed_requests_total{data_class="internal",route="upstream:eu-cloud"}'] >= 4
    assert m['edgefleet_detector_hits_total{detector="card"}'] >= 2
    # The dead upstream was tried first, failed twice, and its circuit is open: it is no longer tried.
    assert m['edgefleet_upstream_circuit{state="open",upstream="dead"}'] == 1


def test_with_a_free_slot_every_class_is_answered_locally(box):
    for text, data_class in ((PUBLIC[0], "public"), (INTERNAL[0], "internal"), (RESTRICTED[0], "restricted")):
        r = _chat(box, box.keys["acme"], text)
        assert r.status_code == 200, r.text
        assert (r.headers["x-edgefleet-route"], r.headers["x-edgefleet-data-class"]) == ("local", data_class)


def test_streams_from_the_upstream_arrive_as_a_stream(box):
    key = box.keys["acme"]
    with _Saturation(box, key):
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": PUBLIC[1]}],
            "max_tokens": 12,
            "temperature": 0.7,
            "stream": True,
        }
        chunks = []
        with httpx.stream(
            "POST", box.base_url + "/v1/chat/completions", json=body, timeout=120, headers=_headers(key)
        ) as r:
            assert r.status_code == 200
            assert r.headers["x-edgefleet-route"] == "upstream:eu-cloud"
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    chunks.append(line)
    assert chunks[-1] == "data: [DONE]" and len(chunks) >= 4


def test_a_model_this_box_lacks_goes_upstream_only_for_classes_that_may_leave(box):
    key = box.keys["acme"]
    r = _chat(box, key, PUBLIC[2], model="some-cloud-model")
    assert r.status_code == 200, r.text
    assert r.headers["x-edgefleet-route"] == "upstream:eu-cloud"
    r = _chat(box, key, RESTRICTED[0], model="some-cloud-model")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "unknown_model"
    assert "never leaves this box" in r.json()["error"]["message"]
    # A name neither the box nor any upstream lists: no route at all.
    r = _chat(box, key, PUBLIC[2], model="gpt-4o")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", r.text


def test_api_keys_tenants_classes_and_rates(box):
    url = box.base_url + "/v1/chat/completions"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    missing = httpx.post(url, json=body, timeout=30)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    wrong = httpx.post(url, json=body, timeout=30, headers={"Authorization": "Bearer efk_not-a-key"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(box.base_url + "/healthz").status_code == 200  # probes need no key

    # globex may send up to internal: a card number is refused, and says why.
    r = _chat(box, box.keys["globex"], RESTRICTED[0])
    assert r.status_code == 403 and r.json()["error"]["code"] == "data_class_not_allowed"
    assert "'internal'" in r.json()["error"]["message"] and "card" in r.json()["error"]["message"]
    assert _chat(box, box.keys["globex"], INTERNAL[0]).status_code == 200

    # initech has a burst of 2 at 0.01 requests/s: the third in a row gets 429 with Retry-After.
    statuses = [_chat(box, box.keys["initech"], "hi", max_tokens=1) for _ in range(3)]
    assert [r.status_code for r in statuses[:2]] == [200, 200]
    assert statuses[2].status_code == 429 and int(statuses[2].headers["retry-after"]) >= 1
    assert statuses[2].json()["error"]["code"] == "rate_limit_exceeded"


def test_the_cache_is_isolated_per_tenant(box):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello to the cache."}],
        "max_tokens": 6,
        "temperature": 0,
    }
    url = box.base_url + "/v1/chat/completions"

    def ask(key):
        return httpx.post(url, json=body, timeout=60, headers={"Authorization": f"Bearer {key}"})

    first, again = ask(box.keys["acme"]), ask(box.keys["acme"])
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")
    other = ask(box.keys["globex"])
    assert other.headers["x-cache"] == "miss", "one tenant never gets another's cached answer"


def _box_audit(box):
    audit = RoutingAudit(box.data_dir / "audit" / "routing.db")
    try:
        return audit.verify(), audit.entries(limit=10_000)
    finally:
        audit.close()


def test_the_routing_audit_is_chained_and_summarised_to_central(box, central):
    check, entries = _box_audit(box)
    assert check.intact and check.entries_checked >= 20
    assert sum(1 for e in entries if (e.data_class, e.route) == ("restricted", "refused")) >= 4
    plain_digests = {hashlib.sha256(t.encode()).hexdigest() for t in RESTRICTED}
    assert not plain_digests & {e.prompt_hash for e in entries}, "the audit keeps keyed hashes, not plain digests"

    def totals_match():
        expected: dict[tuple[str, str], int] = {}
        for e in _box_audit(box)[1]:
            expected[(e.data_class, e.route)] = expected.get((e.data_class, e.route), 0) + 1
        nodes = json.loads(edgefleet_cli(central, "audit", "routing", "--node", box.node_id, "--json"))
        counts = {(c["data_class"], c["route"]): c["requests"] for n in nodes for c in n["counts"]}
        return counts if counts == expected else None

    totals = wait_for(totals_match, timeout_s=60, what="central's routing totals to match the box's audit")
    assert totals[("restricted", "refused")] >= 4


def test_the_agent_refuses_to_serve_beyond_loopback_without_keys(tmp_path):
    config = write_config(tmp_path / "agent.toml", {"server": {"listen": "0.0.0.0:0"}}, {"data_dir": str(tmp_path)})
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "0.0.0.0:0 is beyond loopback" in done.stderr and "edge-agent keys add" in done.stderr
    assert not (tmp_path / "http-address").exists(), "it never bound the port"


# -- the attack set: everything that leaves is judged, or does not leave -----------------------------------------
#
# A second box (one sequence, no queue) whose only upstream writes down every request body it receives. That
# upstream lists a model the box does not serve, so a request naming it goes upstream with no saturation needed.
# For each attack the upstream's log must hold no card, IBAN or SSN in any field under any spelling, and the box's
# routing audit must agree (the record is restricted and refused).

CARD, SSN, IBAN = "4111111111111111", "123456789", "de89370400440532013000"
CLOUD = "cloud-model"  # listed by the logging upstream as it is
CLOUD_RENAMED = "cloud-renamed"  # listed as "cloud-renamed=gpt-4o-mini"
EMAIL = "jane.doe@example.com"


def _flat(text: str) -> str:
    """What a reader recovers from text whatever its spelling: NFKC, then letters and digits only, lower case."""
    return re.sub(r"[\W_]", "", unicodedata.normalize("NFKC", text)).lower()


def _strings(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    else:
        yield str(value)


def _leaks(record: dict) -> list[str]:
    """The card, SSN and IBAN found in one received request: in its raw body, in every decoded JSON string (escapes
    undone), in each field on its own and all of them run together."""
    raw = record["body"]
    try:
        decoded = list(_strings(json.loads(raw)))
    except ValueError:
        decoded = []
    views = [raw, "".join(decoded), *decoded, record["path"]]
    return sorted({item for item in (CARD, SSN, IBAN) for view in views if item in _flat(view)})


@pytest.fixture(scope="module")
def logger(tmp_path_factory):
    server = start_logging_upstream(tmp_path_factory.mktemp("logging-upstream"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def attack_box(tmp_path_factory, logger):
    agent = start_agent(
        tmp_path_factory.mktemp("attack-box"),
        sections={
            "model": {"n_parallel": 1},
            "scheduler": {"max_queue": 0},
            "policy": {},
            "policy.classes": [
                {"name": "public", "jurisdictions": ["*"]},
                {"name": "internal", "jurisdictions": ["eu"], "redact": True},
                {"name": "restricted", "jurisdictions": []},
            ],
            "upstreams": [
                {
                    "name": "logger",
                    "url": logger.base_url + "/v1",
                    "jurisdiction": "eu",
                    "models": [CLOUD, f"{CLOUD_RENAMED}=gpt-4o-mini"],
                    "retries": 0,
                    "timeout_s": 30.0,
                }
            ],
        },
    )
    yield agent
    agent.stop()


def _audit_path(agent):
    return agent.data_dir / "audit" / "routing.db"


def _last_sequence(agent) -> int:
    rows = read_entries(_audit_path(agent), 0, 1_000_000)
    return rows[-1].sequence if rows else 0


def _post(agent, path: str, body: dict) -> httpx.Response:
    return httpx.post(agent.base_url + path, json=body, timeout=60, headers={"Cache-Control": "no-store"})


def _attempt(agent, logger, path: str, body: dict, audited: bool = True):
    """Send one request; return the response, the requests the upstream received meanwhile, and the box's audit
    record of it (waited for: the audit writes in batches)."""
    sequence, received = _last_sequence(agent), len(logger.posts())
    response = _post(agent, path, body)
    # The upstream logs a body before it answers, so whatever reached it is in the log by now.
    arrived = logger.posts()[received:]
    record = None
    if audited:
        rows = wait_for(
            lambda: read_entries(_audit_path(agent), sequence, 100), timeout_s=60, what="the box's routing audit record"
        )
        assert len(rows) == 1, rows
        record = rows[0]
    return response, arrived, record


def _chat_body(text: str, model: str = CLOUD, **extra) -> dict:
    message = {"role": "user", "content": text, **({"name": extra.pop("name")} if "name" in extra else {})}
    return {"model": model, "messages": [message], "max_tokens": 4, "temperature": 0.7, **extra}


def _tool(name: str, description: str, properties: dict | None = None) -> dict:
    parameters = {"type": "object", "properties": properties or {}}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


def _tool_history(arguments: str = "{}", result: str = "done", model: str = CLOUD) -> dict:
    """A conversation in which the assistant called "pay" and the tool answered."""
    call = {"id": "call_1", "type": "function", "function": {"name": "pay", "arguments": arguments}}
    return {
        "model": model,
        "messages": [
            {"role": "user", "content": "Pay the order."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": result},
        ],
        "tools": [_tool("pay", "Pays.")],
        "max_tokens": 4,
        "temperature": 0.7,
    }


ATTACKS = {
    "card-dots": _chat_body("Charge the card 4111.1111.1111.1111 for the order."),
    "card-double-spaces": _chat_body("Charge the card 4111  1111  1111  1111 for the order."),
    "card-mixed-dashes-spaces": _chat_body("Charge the card 4111-1111 1111 - 1111 for the order."),
    "card-newlines": _chat_body("Charge the card\n4111\n1111\n1111\n1111\nfor the order."),
    "card-8+8": _chat_body("Charge the card 41111111 11111111 for the order."),
    "card-glued-to-a-word": _chat_body("Charge Visa4111111111111111 for the order."),
    "card-slashes": _chat_body("Charge the card 4111/1111/1111/1111 for the order."),
    "card-fullwidth": _chat_body(
        "Charge the card \uff14\uff11\uff11\uff11 \uff11\uff11\uff11\uff11 "
        "\uff11\uff11\uff11\uff11 \uff11\uff11\uff11\uff11 for the order."
    ),
    "card-no-break-spaces": _chat_body("Charge the card 4111\u00a01111\u00a01111\u00a01111 for the order."),
    "card-zero-width-spaces": _chat_body("Charge the card 4111\u200b1111\u200b1111\u200b1111 for the order."),
    "ssn-dots": _chat_body("My social security number is 123.45.6789, fill in the form."),
    "iban-dashes": _chat_body("Wire it to DE89-3704-0044-0532-0130-00 today."),
    "card-in-stop": _chat_body("Name one colour of the sea.", stop=["4111111111111111"]),
    "card-in-name": _chat_body("Name one colour of the sea.", name="visa_4111_1111_1111_1111"),
    "card-streamed": _chat_body("Charge the card 4111.1111.1111.1111 for the order.", stream=True),
    # Tools and structured outputs: every string in them is model-visible and would leave with the request.
    "card-in-tool-description": _chat_body(
        "Pay the order.", tools=[_tool("pay", "Pays with the card 4111 1111 1111 1111.")], tool_choice="auto"
    ),
    "card-in-tool-schema-enum": _chat_body(
        "Pay the order.",
        tools=[_tool("pay", "Pays.", {"card": {"type": "string", "enum": ["4111-1111-1111-1111"]}})],
    ),
    "card-in-tool-call-arguments": _tool_history(arguments='{"card": "4111 1111 1111 1111"}'),
    "card-in-tool-result": _tool_history(result="charged 4111.1111.1111.1111"),
    "card-in-response-format": _chat_body(
        "Pay the order.",
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "receipt", "schema": {"const": "4111 1111 1111 1111"}},
        },
    ),
}


@pytest.mark.parametrize("case", ATTACKS)
def test_attack_restricted_data_never_reaches_the_upstream(attack_box, logger, case):
    response, arrived, record = _attempt(attack_box, logger, "/v1/chat/completions", ATTACKS[case])
    assert arrived == [], f"{case}: the upstream received {arrived}"
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "unknown_model"
    assert (response.headers["x-edgefleet-route"], response.headers["x-edgefleet-data-class"]) == (
        "refused",
        "restricted",
    )
    assert (record.data_class, record.route) == ("restricted", "refused"), record


def test_attack_a_spelled_card_in_a_completions_prompt(attack_box, logger):
    body = {"model": CLOUD, "prompt": "Charge 4111 . 1111 . 1111 . 1111 now:", "max_tokens": 4}
    response, arrived, record = _attempt(attack_box, logger, "/v1/completions", body)
    assert arrived == [] and response.status_code == 404, response.text
    assert (record.data_class, record.route) == ("restricted", "refused")


def test_attack_pii_in_user_is_never_forwarded_and_in_metadata_is_refused(attack_box, logger):
    body = _chat_body("Name one colour of the sea.", user="card 4111 1111 1111 1111, ssn 123-45-6789")
    response, arrived, record = _attempt(attack_box, logger, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    assert response.headers["x-edgefleet-route"] == "upstream:logger"
    assert (record.data_class, record.route) == ("public", "upstream:logger")
    (received,) = arrived
    sent = json.loads(received["body"])
    assert "user" not in sent and _leaks(received) == []
    assert sent["messages"] == [{"role": "user", "content": "Name one colour of the sea."}]

    for metadata in ({"card": CARD}, {"note": "ssn 123-45-6789"}):
        body = _chat_body("Name one colour of the sea.", metadata=metadata)
        response, arrived, _ = _attempt(attack_box, logger, "/v1/chat/completions", body, audited=False)
        assert response.status_code == 400 and response.json()["error"]["param"] == "metadata", response.text
        assert arrived == []


def test_attack_token_id_prompts_never_reach_the_upstream(attack_box, logger):
    ids = [504, 314, 253, 1012, 30]  # in every model's vocabulary here
    # Naming a model only the upstream serves: refused, and audited as refused.
    response, arrived, record = _attempt(
        attack_box, logger, "/v1/completions", {"model": CLOUD, "prompt": ids, "max_tokens": 2}
    )
    assert arrived == [] and response.status_code == 400, response.text
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (
        "token_prompt_not_forwarded",
        "prompt",
    )
    assert (record.route, record.reason) == ("refused", "token_prompt")
    # Naming the box's model: answered here.
    response, arrived, record = _attempt(
        attack_box, logger, "/v1/completions", {"model": MODEL, "prompt": ids, "max_tokens": 2}
    )
    assert arrived == [] and response.status_code == 200, response.text
    assert record.route == "local"
    # Ids outside the vocabulary: a 400 naming its bounds, for any model and for embeddings.
    for path, body, param in (
        ("/v1/completions", {"model": MODEL, "prompt": [1, 10**9]}, "prompt"),
        ("/v1/completions", {"model": CLOUD, "prompt": [1, -5]}, "prompt"),
        ("/v1/embeddings", {"model": MODEL, "input": [[1, 10**9]]}, "input"),
    ):
        response, arrived, _ = _attempt(attack_box, logger, path, body, audited=False)
        assert arrived == [] and response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param and re.search(r"outside the vocabulary \(0\.\.\d+\)", error["message"]), error


def test_attack_while_the_box_is_saturated(attack_box, logger):
    """The box's own model overflowing: token ids and restricted data stay, public text goes (named as asked)."""
    sequence = _last_sequence(attack_box)
    with _Saturation(attack_box, "any"):
        wait_for(
            lambda: read_entries(_audit_path(attack_box), sequence, 100),
            timeout_s=60,
            what="the long generation's audit record",
        )
        response, arrived, record = _attempt(
            attack_box, logger, "/v1/completions", {"model": MODEL, "prompt": [504, 314, 253], "max_tokens": 2}
        )
        assert arrived == [] and response.status_code == 429, response.text
        assert (record.route, record.reason) == ("refused", "token_prompt")
        response, arrived, record = _attempt(
            attack_box,
            logger,
            "/v1/chat/completions",
            _chat_body("Name a colour.", model=MODEL, stop=["4111.1111.1111.1111"]),
        )
        assert arrived == [] and response.status_code == 429, response.text
        assert (record.data_class, record.route) == ("restricted", "refused")
        response, arrived, record = _attempt(
            attack_box, logger, "/v1/chat/completions", _chat_body("Name a colour of the sea.", model=MODEL)
        )
        assert response.status_code == 200 and record.route == "upstream:logger", response.text
        (received,) = arrived
        assert json.loads(received["body"])["model"] == MODEL


def test_attack_a_model_no_upstream_lists_is_404_model_not_found(attack_box, logger):
    response, arrived, _ = _attempt(
        attack_box,
        logger,
        "/v1/chat/completions",
        _chat_body("Name one colour of the sea.", model="gpt-4o"),
        audited=False,
    )
    assert arrived == [] and response.status_code == 404, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == ("model_not_found", "model", "invalid_request_error")
    assert f"through an upstream: {CLOUD}, {CLOUD_RENAMED}" in error["message"]
    models = [m["id"] for m in httpx.get(attack_box.base_url + "/v1/models").json()["data"]]
    assert models == [MODEL, CLOUD, CLOUD_RENAMED]


def test_internal_data_arrives_redacted_and_public_data_intact(attack_box, logger):
    text = f"Summarise the mail from {EMAIL} for me."
    response, arrived, record = _attempt(attack_box, logger, "/v1/chat/completions", _chat_body(text, stop=[EMAIL]))
    assert response.status_code == 200, response.text
    assert (record.data_class, record.route) == ("internal", "upstream:logger")
    (received,) = arrived
    sent = json.loads(received["body"])
    content = sent["messages"][0]["content"]
    assert content.startswith("Summarise the mail from ") and content.endswith(" for me.") and content != text
    assert _flat("jane.doe") not in _flat(received["body"]) and _flat(EMAIL) not in _flat(json.dumps(sent))

    public = "Name one colour of the sea, and say why: 3 words."
    for model, asked in ((CLOUD, CLOUD), (CLOUD_RENAMED, "gpt-4o-mini")):
        body = _chat_body(public, model=model, stream=model == CLOUD, top_k=5, seed=3)
        response, arrived, record = _attempt(attack_box, logger, "/v1/chat/completions", body)
        assert response.status_code == 200 and record.route == "upstream:logger", response.text
        (received,) = arrived
        assert json.loads(received["body"]) == {
            "model": asked,
            "messages": [{"role": "user", "content": public}],
            "max_tokens": 4,
            "temperature": 0.7,
            "top_k": 5,
            "seed": 3,
            "stream": model == CLOUD,
            # A stream asks for the upstream's usage, to count what bursting costs (a flag, no text).
            **({"stream_options": {"include_usage": True}} if model == CLOUD else {}),
        }


def test_internal_data_in_tools_arrives_redacted_or_not_at_all(attack_box, logger):
    """An email (class internal, which redacts) in a tool result and in a tool's description arrives redacted, the
    rest of the request intact; one in a schema's enum cannot be redacted without changing what the request asks
    for: a 503 redaction_failed, and nothing arrives."""
    body = _tool_history(arguments='{"to": "the shop"}', result=f"mailed {EMAIL}")
    body["tools"] = [_tool("pay", f"Pays; receipts go to {EMAIL}.")]
    response, arrived, record = _attempt(attack_box, logger, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    assert (record.data_class, record.route) == ("internal", "upstream:logger")
    (received,) = arrived
    sent = json.loads(received["body"])
    assert _flat("jane.doe") not in _flat(received["body"])
    assert sent["messages"][1]["tool_calls"] == body["messages"][1]["tool_calls"]
    assert sent["messages"][2]["tool_call_id"] == "call_1" and sent["messages"][2]["content"].startswith("mailed ")
    assert sent["tools"][0]["function"]["name"] == "pay" and sent["tool_choice"] == "auto"

    enum = _chat_body("Mail the receipt.", tools=[_tool("mail", "Mails.", {"to": {"enum": [EMAIL]}})])
    response, arrived, record = _attempt(attack_box, logger, "/v1/chat/completions", enum)
    assert arrived == [] and response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "redaction_failed" and "a structured part cannot be redacted" in error["message"]
    assert "jane.doe" not in error["message"]
    assert (record.data_class, record.route, record.reason) == ("internal", "refused", "redaction_failed")


def test_the_upstream_log_holds_no_card_iban_or_ssn_in_any_request(attack_box, logger):
    records = logger.records()
    assert len([r for r in records if r["method"] == "POST"]) >= 4, "the public and internal requests did arrive"
    leaked = {i: _leaks(r) for i, r in enumerate(records) if _leaks(r)}
    assert leaked == {}, [records[i] for i in leaked]
