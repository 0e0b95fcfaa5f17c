"""Serving benchmark: the edge agent against its peers, same model, same load, one run.

Peers, one after another on the same machine:
  edge-agent            this project (batched decoding over llama-cpp-python's low-level API)
  llama_cpp.server      ``python -m llama_cpp.server`` from the same llama-cpp-python build
  llama-server          llama.cpp's own server, when a binary is on PATH or given with
                        --llama-server (bench/build_llama_server.sh builds one from the
                        llama.cpp that llama-cpp-python vendors)

Load: /v1/completions, streamed, 32 new tokens, temperature 0.7 (top-k 40, top-p 0.95,
min-p 0.05 sent explicitly so every server samples alike), a distinct seed per request,
at concurrency 1 and 8. Reported per system: generated tokens/s (counted from the
stream's usage, stream_options.include_usage), time to first token p50/p99, request
latency p50/p99, errors and retries; then the ratios edge-agent/peer.

Fairness: llama-server is built with the agent's CMAKE_ARGS (make llama-server), and each
system's llama.cpp system_info line is recorded and compared (a warning when the CPU
features differ). A request that fails before any response (the server closed a kept-alive
connection: "Server disconnected without sending a response", or a refused connect) is
retried once on a fresh connection, for every system alike, and counted. The load
average is recorded around each phase: the box is shared.

Variants (--variant NAME=SYSTEM:KEY=VALUE,...): a copy of a system with extra environment,
e.g. edge-agent+spin=edge-agent:OMP_WAIT_POLICY=ACTIVE; the key switchinterval=S runs
the agent under sys.setswitchinterval(S). Rounds alternate the order of the systems.

Extra phases (--phases json,logprobs,n4): JSON-schema constrained generation (nested
objects and enums, 64 tokens, c=1 and c=8; chat's response_format for a model with a chat
template, else /v1/completions with response_format, and llama-server's json_schema field),
logprobs cost (top 5 against none, c=1), and one n=4 request against four n=1 requests.

Cache hits: repeated deterministic requests to the agent at concurrency 16, driven by
wrk (Debian package ``wrk``) with a POST script, which costs the 2-core box far less
CPU than a Python client would; requests/s and latency p50/p99.

Results: bench/results/serve-<date>.json. Usage:
    python bench/serve.py [--models gemma-3-270m,smollm2-135m-instruct] [--llama-server PATH]
        [--systems edge-agent,llama-server] [--variant ...] [--phases base,json,logprobs,n4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from results_file import describe_machine, write_results  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "Once upon a time, in a small village by the sea,",
    "The three most important things about edge computing are",
    "Here is a short recipe for tomato soup:",
    "The history of the printing press begins",
    "Dear team, I am writing to let you know that",
    "In the year 2050, cities will",
    "A good way to learn a new language is",
    "The mountain trail was steep and",
]
SAMPLING = {"temperature": 0.7, "top_k": 40, "top_p": 0.95, "min_p": 0.05}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Server:
    """A server process started for the benchmark and stopped by its pid.

    kind is the system it runs (edge-agent, llama_cpp.server, llama-server); name is that or a
    variant of it (edge-agent+passive) with extra environment."""

    def __init__(self, name: str, cmd: list[str], base_url: str, model_id: str, log: Path, env=None, kind=None):
        self.name, self.cmd, self.base_url, self.model_id, self.log = name, cmd, base_url, model_id, log
        self.env = env  # only the variables added to the bench's own environment
        self.kind = kind or name
        self.proc: subprocess.Popen | None = None

    def __enter__(self):
        with open(self.log, "wb") as out:
            env = {**os.environ, **self.env} if self.env else None
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited during start; see {self.log}")
            try:
                probe = httpx.post(
                    self.base_url + "/v1/completions",
                    timeout=30,
                    json={"model": self.model_id, "prompt": "Hi", "max_tokens": 1},
                )
                if probe.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} did not answer within 180 s; see {self.log}")

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def system_info(self) -> str:
        """llama.cpp's system_info line for this system: the CPU features its kernels were built with."""
        if self.kind == "llama-server":
            return llama_server_system_info(self.cmd[0], self.cmd[self.cmd.index("-m") + 1])
        import llama_cpp  # the agent and llama_cpp.server load the bench's own llama-cpp-python

        return llama_cpp.llama_print_system_info().decode(errors="replace").strip()


def llama_server_system_info(binary: str, gguf: str) -> str:
    """llama-server logs system_info only at verbosity 4, which would also log every token of the measured
    run: a second start, on a small context, just for that line, stopped by its pid."""
    cmd = [binary, "-m", gguf, "--host", "127.0.0.1", "--port", str(free_port()), "-c", "256", "-lv", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    try:
        deadline = time.monotonic() + 60
        for line in proc.stdout or ():
            if "system_info:" in line:
                return line.split("system_info:", 1)[1].strip()
            if time.monotonic() > deadline:
                break
        return ""
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def cpu_features(system_info: str) -> set[str]:
    """The features a system_info line reports as on ("AVX2 = 1" gives AVX2), thread counts aside."""
    return {m.group(1) for m in re.finditer(r"([A-Z][A-Z0-9_]*) = 1\b", system_info)}


def is_retryable(exc: Exception, got_status: bool) -> bool:
    """A request the server never answered: the connection was refused, or a kept-alive connection
    was closed before the status line ("Server disconnected without sending a response"). Any
    client would retry that on a fresh connection; an error after the status line is the server's."""
    if got_status:
        return False
    return isinstance(exc, (httpx.ConnectError, httpx.RemoteProtocolError))


async def stream_once(client: httpx.AsyncClient, url: str, body: dict, started: float) -> dict:
    ttft, chunk_tokens, usage, status = None, 0, None, None
    choices_seen: set[int] = set()
    try:
        # no-store: this measures generation; the agent's cache has its own run.
        async with client.stream("POST", url, json=body, headers={"Cache-Control": "no-store"}) as r:
            status = r.status_code
            if r.headers.get("x-cache") == "hit":
                return {"error": "served from the response cache; the generation figures would be wrong"}
            if r.status_code != 200:
                await r.aread()
                return {"error": f"HTTP {r.status_code}: {r.text[:200]}"}
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if choice.get("text") or delta.get("content") or delta.get("tool_calls"):
                        chunk_tokens += 1
                        choices_seen.add(choice.get("index", 0))
                        if ttft is None:
                            ttft = time.perf_counter() - started
    except httpx.HTTPError as exc:
        return {"error": repr(exc), "retryable": is_retryable(exc, status is not None)}
    tokens = usage.get("completion_tokens") if usage else None
    return {
        "ttft": ttft,
        "latency": time.perf_counter() - started,
        "tokens": tokens if tokens is not None else chunk_tokens,
        "tokens_from": "usage" if tokens is not None else "chunks",
        "choices": len(choices_seen),
    }


async def one_request(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    """One streamed request; tokens come from the final usage chunk (stream_options.include_usage).
    A request the server never answered is retried once on a fresh connection; the latency counts both."""
    started = time.perf_counter()
    result = await stream_once(client, url, body, started)
    if result.pop("retryable", False):
        async with httpx.AsyncClient(timeout=300) as fresh:
            result = await stream_once(fresh, url, body, started)
        result.pop("retryable", None)
        result["retried"] = 1
    return result


def completion_body(server: Server, index: int, max_tokens: int) -> tuple[str, dict]:
    return "/v1/completions", {
        "model": server.model_id,
        "prompt": PROMPTS[index % len(PROMPTS)],
        "max_tokens": max_tokens,
        "seed": 1000 + index,
        "stream": True,
        "stream_options": {"include_usage": True},
        **SAMPLING,
    }


async def run_load(
    server: Server, concurrency: int, n_requests: int, make_body, seed_base: int, time_limit_s: float = 0
) -> dict:
    """n_requests requests from `concurrency` workers on kept-alive connections; make_body(index) gives
    (path, body). Past time_limit_s (0: none) no new request starts, so a system that collapses under
    the box's other load ends its phase with fewer requests (reported) instead of stalling the run.
    The load average before and after is recorded: the box is shared."""
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def request(index: int) -> dict:
            path, body = make_body(index)
            return await one_request(client, server.base_url + path, body)

        # Warm-up, not counted, on seeds outside the measured range.
        await asyncio.gather(*(request(seed_base + 10_000 + i) for i in range(concurrency)))
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n_requests):
            queue.put_nowait(seed_base + i)
        results: list[dict] = []

        load_before = os.getloadavg()[0]
        started = time.perf_counter()

        async def worker():
            while not queue.empty() and not (time_limit_s and time.perf_counter() - started > time_limit_s):
                results.append(await request(queue.get_nowait()))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return summarize(results, concurrency, len(results), wall, load_before)


def summarize(results: list[dict], concurrency: int, n_requests: int, wall: float, load_before: float) -> dict:
    ok = [r for r in results if "error" not in r]
    ttfts = [r["ttft"] for r in ok if r["ttft"] is not None]
    latencies = [r["latency"] for r in ok]
    tokens = sum(r["tokens"] for r in ok)
    return {
        "concurrency": concurrency,
        "requests": n_requests,
        "errors": len(results) - len(ok),
        "retries": sum(r.get("retried", 0) for r in results),
        "error_samples": [r["error"] for r in results if "error" in r][:3],
        "tokens_from": sorted({r["tokens_from"] for r in ok}),
        "generated_tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2) if wall else 0.0,
        "ttft_p50_ms": round(percentile(ttfts, 0.5) * 1000, 1),
        "ttft_p99_ms": round(percentile(ttfts, 0.99) * 1000, 1),
        "latency_p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


# A schema of nested objects and enums for the constrained-generation phase.
PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "role": {"type": "string", "enum": ["engineer", "teacher", "farmer", "doctor"]},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "country": {"type": "string", "enum": ["FR", "DE", "JP", "US"]}},
            "required": ["city", "country"],
            "additionalProperties": False,
        },
        "skills": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "role", "address", "skills"],
    "additionalProperties": False,
}
JSON_PROMPT = "Describe a fictional person as JSON with name, role, address (city, country) and skills."


def json_body(server: Server, index: int, chat: bool) -> tuple[str, dict]:
    """The constrained request: chat's response_format json_schema for a model with a chat template;
    otherwise /v1/completions, with response_format for the agent and llama-server's own json_schema
    field (its /v1/completions reads no response_format)."""
    common = {
        "model": server.model_id,
        "max_tokens": 64,
        "seed": 1000 + index,
        "stream": True,
        "stream_options": {"include_usage": True},
        **SAMPLING,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}}
    if chat:
        messages = [{"role": "user", "content": JSON_PROMPT}]
        return "/v1/chat/completions", {**common, "messages": messages, "response_format": response_format}
    body = {**common, "prompt": JSON_PROMPT + "\nJSON:"}
    if server.kind == "llama-server":
        return "/v1/completions", {**body, "json_schema": PERSON_SCHEMA}
    return "/v1/completions", {**body, "response_format": response_format}


def logprobs_body(server: Server, index: int, top: int | None) -> tuple[str, dict]:
    path, body = completion_body(server, index, 32)
    return path, ({**body, "logprobs": top} if top else body)


def n_body(server: Server, index: int, n: int) -> tuple[str, dict]:
    path, body = completion_body(server, index, 32)
    body = {**body, "prompt": PROMPTS[0]}  # one prompt for the n=4 and the 4 x n=1 runs
    return path, ({**body, "n": n} if n != 1 else body)


def cache_hit_run(server: Server, wrk: str | None, duration_s: int, concurrency: int) -> dict:
    body = {"model": server.model_id, "prompt": "Cached answers are fast because", "max_tokens": 32, "temperature": 0}
    first = httpx.post(server.base_url + "/v1/completions", json=body, timeout=120)
    primed = httpx.post(server.base_url + "/v1/completions", json=body, timeout=120)
    if primed.headers.get("x-cache") != "hit":
        return {
            "error": f"the cache did not hit after priming (X-Cache: {primed.headers.get('x-cache')}, "
            f"first status {first.status_code})"
        }
    if not wrk:
        return {"error": "wrk not found (apt-get install wrk); the cache-hit run needs a cheap load generator"}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(json.dumps(body))}\n"
        )
    out = subprocess.run(
        [
            wrk,
            "-t1",
            f"-c{concurrency}",
            f"-d{duration_s}s",
            "--latency",
            "-s",
            script.name,
            server.base_url + "/v1/completions",
        ],
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
    )
    os.unlink(script.name)
    text = out.stdout

    def latency(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors:.*", text)
    return {
        "concurrency": concurrency,
        "duration_s": duration_s,
        "tool": "wrk",
        "requests_per_s": float(rps.group(1)) if rps else None,
        "latency_p50_ms": latency("50"),
        "latency_p99_ms": latency("99"),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(0) if errors else "",
        "raw": text,
    }


def systems_for(model: str, gguf: Path, args, workdir: Path) -> list[Server]:
    """The systems --systems names, then the --variant copies, each on its own port and log."""
    threads = str(os.cpu_count() or 1)

    def command(kind: str, port: int, extra: dict[str, str]) -> list[str] | None:
        if kind == "edge-agent":
            python = [sys.executable]
            if "switchinterval" in extra:
                # The GIL's switch interval, set before the agent's own code runs (a bench-only knob).
                python += [
                    "-c",
                    f"import sys; sys.setswitchinterval({float(extra['switchinterval'])}); "
                    "from edge_agent.cli import main; sys.exit(main(sys.argv[1:]))",
                ]
            else:
                python += ["-m", "edge_agent.cli"]
            data_dir = workdir / f"agent-{model}-{port}"
            return [*python, "serve", "--model", model, "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)]
        if kind == "llama_cpp.server":
            return [
                sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                "--port", str(port), "--n_ctx", "2048", "--n_threads", threads, "--n_threads_batch", threads,
                # Its default aborts a running stream whenever another request
                # arrives; queueing them is what a server under load must do.
                "--interrupt_requests", "False",
            ]  # fmt: skip
        if kind == "llama-server":
            binary = args.llama_server or shutil.which("llama-server") or _built_llama_server()
            if not binary:
                return None
            return [
                binary, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-np", "8",
                "-c", str(2048 * 8), "-t", threads, "-tb", threads,
            ]  # fmt: skip
        raise SystemExit(f"unknown system {kind!r}: edge-agent, llama_cpp.server or llama-server")

    wanted = [(name, name, {}) for name in args.systems.split(",") if name.strip()]
    for variant in args.variant:
        name, _, rest = variant.partition("=")
        kind, _, pairs = rest.partition(":")
        extra = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
        wanted.append((name, kind, extra))
    systems = []
    for name, kind, extra in wanted:
        port = free_port()
        cmd = command(kind.strip(), port, extra)
        if cmd is None:
            print(f"[{model}] {name}: no llama-server binary (make llama-server builds one); skipped", flush=True)
            continue
        env = {k: v for k, v in extra.items() if k != "switchinterval"}
        log = workdir / f"{name}-{model}.log"
        systems.append(Server(name, cmd, f"http://127.0.0.1:{port}", model, log, env=env, kind=kind.strip()))
    return systems


def _built_llama_server() -> str | None:
    candidate = ROOT / "build" / "llama-server" / "llama-server"
    return str(candidate) if candidate.is_file() else None


def machine() -> dict:
    import llama_cpp

    return describe_machine(llama_cpp_python=llama_cpp.__version__)


def has_chat_template(gguf: Path) -> bool:
    import llama_cpp

    llm = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    return bool(llm.metadata.get("tokenizer.chat_template"))


def measure(server: Server, model: str, args, round_no: int, chat: bool) -> dict:
    """One round for one system: start it, run each phase, stop it."""
    print(f"[{model}] {server.name} (round {round_no + 1}): starting", flush=True)
    phases_wanted = set(args.phases.split(","))
    plan = []
    if "base" in phases_wanted:
        for conc, n in ((1, args.requests_c1), (8, args.requests_c8)):
            plan.append((str(conc), conc, n, lambda i: completion_body(server, i, args.max_tokens)))
    if "json" in phases_wanted:
        for conc, n in ((1, args.requests_c1 // 2), (8, args.requests_c8 // 2)):
            plan.append((f"json-c{conc}", conc, n, lambda i: json_body(server, i, chat)))
    if "logprobs" in phases_wanted:
        plan.append(("logprobs-none", 1, args.requests_c1, lambda i: logprobs_body(server, i, None)))
        plan.append(("logprobs-5", 1, args.requests_c1, lambda i: logprobs_body(server, i, 5)))
    if "n4" in phases_wanted:
        # The same work two ways: n=4 requests one after another, and groups of four n=1 requests at once.
        plan.append(("n4", 1, args.requests_n4, lambda i: n_body(server, i, 4)))
        plan.append(("n1x4", 4, args.requests_n4 * 4, lambda i: n_body(server, i, 1)))
    try:
        with server:
            phases = {"system_info": server.system_info()}
            for key, conc, n, make_body in plan:
                load = run_load(server, conc, n, make_body, conc * 100, args.phase_time_limit)
                p = phases[key] = asyncio.run(load)
                p["phase"] = key
                print(
                    f"[{model}] {server.name} {key}: {p['tokens_per_s']} tok/s, ttft p50 {p['ttft_p50_ms']} ms, "
                    f"lat p50 {p['latency_p50_ms']} ms, errors {p['errors']}, retries {p['retries']}, "
                    f"load {p['load_before']}->{p['load_after']}",
                    flush=True,
                )
            return phases
    except RuntimeError as exc:
        print(f"[{model}] {server.name}: {exc}", flush=True)
        return {"error": str(exc), "log_tail": server.log.read_text()[-2000:]}


def median_phases(rounds: list[dict]) -> dict:
    """Per phase, the median of each figure over the rounds; errors and retries are summed."""
    good = [r for r in rounds if "error" not in r]
    if not good:
        return rounds[-1]
    summary: dict = {"system_info": good[0]["system_info"]}
    for key in phase_keys(good[0]):
        runs = [r[key] for r in good]
        summary[key] = {
            k: (
                sum(run[k] for run in runs) if k in ("errors", "retries") else statistics.median(run[k] for run in runs)
            )
            for k in runs[0]
            if isinstance(runs[0][k], (int, float))
        }
        summary[key]["phase"] = key
        summary[key]["error_samples"] = [e for run in runs for e in run["error_samples"]][:3]
        summary[key]["tokens_from"] = sorted({t for run in runs for t in run["tokens_from"]})
        summary[key]["rounds"] = len(runs)
    return summary


def phase_keys(phases: dict) -> list[str]:
    return [k for k, v in phases.items() if isinstance(v, dict)]


def ratios(results: dict) -> dict:
    """tokens/s of each edge-agent system over each other system, per phase: the ratio of the medians,
    and the median of the per-round ratios (systems measured side by side in one round share its load)."""
    out: dict = {}
    kinds = results["kinds"]
    for agent, agent_phases in results["systems"].items():
        if kinds[agent] != "edge-agent" or "error" in agent_phases:
            continue
        for peer, peer_phases in results["systems"].items():
            if peer == agent or "error" in peer_phases or (kinds[peer] == "edge-agent" and agent != "edge-agent"):
                continue
            pair: dict = {}
            for key in phase_keys(agent_phases):
                if key not in peer_phases or not peer_phases[key]["tokens_per_s"]:
                    continue
                per_round = [
                    a[key]["tokens_per_s"] / p[key]["tokens_per_s"]
                    for a, p in zip(results["rounds"][agent], results["rounds"][peer], strict=True)
                    if "error" not in a and "error" not in p and p[key]["tokens_per_s"]
                ]
                pair[key] = {
                    "of_medians": round(agent_phases[key]["tokens_per_s"] / peer_phases[key]["tokens_per_s"], 3),
                    "median_per_round": round(statistics.median(per_round), 3) if per_round else None,
                    "per_round": [round(r, 3) for r in per_round],
                }
            out[f"{agent}/{peer}"] = pair
    return out


def print_table(model: str, results: dict) -> None:
    print(f"\n== {model} (medians over rounds) ==")
    print(
        f"{'system':<22}{'phase':>14}{'tok/s':>9}{'ttft p50':>10}{'ttft p99':>10}{'lat p50':>10}{'lat p99':>10}"
        f"{'err':>5}{'retry':>6}"
    )
    for name, phases in results["systems"].items():
        if "error" in phases:
            print(f"{name:<22}  failed: {phases['error']}")
            continue
        for key in phase_keys(phases):
            phase = phases[key]
            print(
                f"{name:<22}{key:>14}{phase['tokens_per_s']:>9.1f}{phase['ttft_p50_ms']:>10.1f}"
                f"{phase['ttft_p99_ms']:>10.1f}{phase['latency_p50_ms']:>10.1f}{phase['latency_p99_ms']:>10.1f}"
                f"{phase['errors']:>5}{phase['retries']:>6}"
            )
    for pair, by_phase in results["ratios"].items():
        print(
            f"{pair}: "
            + ", ".join(f"{k}: {r['of_medians']:.2f}x (per round {r['median_per_round']})" for k, r in by_phase.items())
        )
    for warning in results["warnings"]:
        print(f"WARNING: {warning}")


def compare_builds(results: dict) -> list[str]:
    """A warning for each system whose llama.cpp reports other CPU features than the agent's."""
    infos = {name: p.get("system_info", "") for name, p in results["systems"].items() if "error" not in p}
    reference = infos.get("edge-agent")
    if reference is None:
        return []
    warnings = []
    for name, info in infos.items():
        if not info:
            warnings.append(f"{name}: no system_info line found; its build cannot be compared")
            continue
        extra, missing = cpu_features(info) - cpu_features(reference), cpu_features(reference) - cpu_features(info)
        if extra or missing:
            warnings.append(
                f"{name} runs other CPU kernels than edge-agent: it has {sorted(extra)}, lacks {sorted(missing)} "
                "(build llama-server with make llama-server)"
            )
    return warnings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="gemma-3-270m,smollm2-135m-instruct")
    parser.add_argument("--systems", default="edge-agent,llama_cpp.server,llama-server")
    parser.add_argument(
        "--variant", action="append", default=[], help="NAME=SYSTEM:KEY=VALUE,... a system with extra environment"
    )
    parser.add_argument("--phases", default="base", help="base,json,logprobs,n4")
    parser.add_argument("--llama-server", help="path to llama.cpp's llama-server binary")
    parser.add_argument("--wrk", default=shutil.which("wrk"), help="path to wrk (default: from PATH)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--requests-c1", type=int, default=16)
    parser.add_argument("--requests-c8", type=int, default=48)
    parser.add_argument("--requests-n4", type=int, default=6, help="n=4 requests (and 4 times as many n=1)")
    parser.add_argument(
        "--phase-time-limit", type=float, default=90, help="seconds after which a phase starts no new request"
    )
    parser.add_argument("--cache-seconds", type=int, default=10, help="0 skips the cache-hit run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all systems; medians are reported")
    parser.add_argument("--out", help="JSON output (default bench/results/serve-<date>.json)")
    args = parser.parse_args()

    from edge_agent.models import resolve_model

    report = {
        "benchmark": "serve",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load": {
            "endpoint": "/v1/completions",
            "stream": True,
            "max_tokens": args.max_tokens,
            **SAMPLING,
            "requests": {"1": args.requests_c1, "8": args.requests_c8, "n4": args.requests_n4},
            "phases": args.phases,
            "rounds": args.rounds,
            "load_average_at_start": os.getloadavg(),
        },
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as tmp:
        workdir = Path(tmp)
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            artifact = resolve_model(model, "", workdir / "models-cache")
            chat = has_chat_template(artifact.path)
            systems = systems_for(model, artifact.path, args, workdir)
            results: dict = {
                "sha256": artifact.sha256,
                "json_phase_endpoint": "/v1/chat/completions" if chat else "/v1/completions",
                "kinds": {s.name: s.kind for s in systems},
                "env": {s.name: s.env or {} for s in systems},
                "systems": {},
                "ratios": {},
                "rounds": {},
            }
            for round_no in range(args.rounds):
                # Every other round in reverse order, so a machine that drifts
                # faster or slower during the run favours nobody.
                for server in systems if round_no % 2 == 0 else systems[::-1]:
                    phases = measure(server, model, args, round_no, chat)
                    results["rounds"].setdefault(server.name, []).append(phases)
                    first_model = model == args.models.split(",")[0].strip()
                    if (
                        server.name == "edge-agent"
                        and first_model
                        and round_no == 0
                        and args.cache_seconds
                        and "error" not in phases
                    ):
                        with server:
                            hits = cache_hit_run(server, args.wrk, args.cache_seconds, 16)
                        report["cache_hits"] = {"model": model, **hits}
                        print(
                            f"[{model}] cache hits: {hits.get('requests_per_s')} req/s, "
                            f"p50 {hits.get('latency_p50_ms')} ms, p99 {hits.get('latency_p99_ms')} ms"
                            + (f" ({hits['error']})" if "error" in hits else ""),
                            flush=True,
                        )
            results["systems"] = {name: median_phases(rounds) for name, rounds in results["rounds"].items()}
            results["ratios"] = ratios(results)
            results["warnings"] = compare_builds(results)
            report["models"][model] = results
            print_table(model, results)
    report["load"]["load_average_at_end"] = os.getloadavg()
    if "cache_hits" in report:
        h = report["cache_hits"]
        print(
            f"\ncache hits (c=16, {h.get('tool', '-')}): {h.get('requests_per_s')} req/s, "
            f"p50 {h.get('latency_p50_ms')} ms, p99 {h.get('latency_p99_ms')} ms"
        )
    write_results("serve", report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
