"""Serving benchmark: the edge agent against its peers, same model, same load, one run.

Peers, one after another on the same machine:
  edge-agent            this project (batched decoding over llama-cpp-python's low-level API)
  llama_cpp.server      ``python -m llama_cpp.server`` from the same llama-cpp-python build
  llama-server          llama.cpp's own server, when a binary is on PATH or given with
                        --llama-server (bench/build_llama_server.sh builds one from the
                        llama.cpp that llama-cpp-python vendors)

Load: /v1/completions, streamed, 32 new tokens, temperature 0.7 (top-k 40, top-p 0.95,
min-p 0.05 sent explicitly so every server samples alike), a distinct seed per request,
at concurrency 1 and 8. Reported per system: generated tokens/s, time to first token
p50/p99, request latency p50/p99, errors; then the ratios edge-agent/peer.

Cache hits: repeated deterministic requests to the agent at concurrency 16, driven by
wrk (Debian package ``wrk``) with a POST script, which costs the 2-core box far less
CPU than a Python client would; requests/s and latency p50/p99.

Results: bench/results/serve-<date>.json. Usage:
    python bench/serve.py [--models gemma-3-270m,smollm2-135m-instruct] [--llama-server PATH]
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
    """A server process started for the benchmark and stopped by its pid."""

    def __init__(self, name: str, cmd: list[str], base_url: str, model_id: str, log: Path, env=None):
        self.name, self.cmd, self.base_url, self.model_id, self.log = name, cmd, base_url, model_id, log
        self.env = env
        self.proc: subprocess.Popen | None = None

    def __enter__(self):
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env)
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


async def one_request(client: httpx.AsyncClient, server: Server, index: int, max_tokens: int) -> dict:
    body = {
        "model": server.model_id,
        "prompt": PROMPTS[index % len(PROMPTS)],
        "max_tokens": max_tokens,
        "seed": 1000 + index,
        "stream": True,
        **SAMPLING,
    }
    started = time.perf_counter()
    ttft, tokens = None, 0
    try:
        # no-store: this measures generation; the agent's cache has its own run.
        async with client.stream(
            "POST", server.base_url + "/v1/completions", json=body, headers={"Cache-Control": "no-store"}
        ) as r:
            if r.headers.get("x-cache") == "hit":
                return {"error": "served from the response cache; the generation figures would be wrong"}
            if r.status_code != 200:
                await r.aread()
                return {"error": f"HTTP {r.status_code}: {r.text[:200]}"}
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                choices = chunk.get("choices") or []
                if choices and choices[0].get("text"):
                    tokens += 1
                    if ttft is None:
                        ttft = time.perf_counter() - started
    except httpx.HTTPError as exc:
        return {"error": repr(exc)}
    return {"ttft": ttft, "latency": time.perf_counter() - started, "tokens": tokens}


async def run_load(server: Server, concurrency: int, n_requests: int, max_tokens: int, seed_base: int) -> dict:
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        # Warm-up, not counted, on seeds outside the measured range.
        await asyncio.gather(
            *(one_request(client, server, seed_base + 10_000 + i, max_tokens) for i in range(concurrency))
        )
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n_requests):
            queue.put_nowait(seed_base + i)
        results: list[dict] = []

        async def worker():
            while not queue.empty():
                results.append(await one_request(client, server, queue.get_nowait(), max_tokens))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ok = [r for r in results if "error" not in r]
    ttfts = [r["ttft"] for r in ok if r["ttft"] is not None]
    latencies = [r["latency"] for r in ok]
    tokens = sum(r["tokens"] for r in ok)
    return {
        "concurrency": concurrency,
        "requests": n_requests,
        "errors": len(results) - len(ok),
        "error_samples": [r["error"] for r in results if "error" in r][:3],
        "generated_tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2) if wall else 0.0,
        "ttft_p50_ms": round(percentile(ttfts, 0.5) * 1000, 1),
        "ttft_p99_ms": round(percentile(ttfts, 0.99) * 1000, 1),
        "latency_p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
    }


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
    threads = str(os.cpu_count() or 1)
    systems = []
    port = free_port()
    systems.append(
        Server(
            "edge-agent",
            [
                sys.executable,
                "-m",
                "edge_agent.cli",
                "serve",
                "--model",
                model,
                "--listen",
                f"127.0.0.1:{port}",
                "--data-dir",
                str(workdir / f"agent-{model}"),
            ],
            f"http://127.0.0.1:{port}",
            model,
            workdir / f"edge-agent-{model}.log",
        )
    )
    if not args.skip_peers:
        port = free_port()
        systems.append(
            Server(
                "llama_cpp.server",
                [
                    sys.executable,
                    "-m",
                    "llama_cpp.server",
                    "--model",
                    str(gguf),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--n_ctx",
                    "2048",
                    "--n_threads",
                    threads,
                    "--n_threads_batch",
                    threads,
                    # Its default aborts a running stream whenever another request
                    # arrives; queueing them is what a server under load must do.
                    "--interrupt_requests",
                    "False",
                ],
                f"http://127.0.0.1:{port}",
                model,
                workdir / f"llama_cpp_server-{model}.log",
            )
        )
        llama_server = args.llama_server or shutil.which("llama-server") or _built_llama_server()
        if llama_server:
            port = free_port()
            systems.append(
                Server(
                    "llama-server",
                    [
                        llama_server,
                        "-m",
                        str(gguf),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "-np",
                        "8",
                        "-c",
                        str(2048 * 8),
                        "-t",
                        threads,
                        "-tb",
                        threads,
                    ],
                    f"http://127.0.0.1:{port}",
                    model,
                    workdir / f"llama-server-{model}.log",
                )
            )
    return systems


def _built_llama_server() -> str | None:
    candidate = ROOT / "build" / "llama-server" / "llama-server"
    return str(candidate) if candidate.is_file() else None


def machine() -> dict:
    import llama_cpp

    return describe_machine(llama_cpp_python=llama_cpp.__version__)


def measure(server: Server, model: str, args, round_no: int) -> dict:
    """One round for one system: start it, load it at each concurrency, stop it."""
    print(f"[{model}] {server.name} (round {round_no + 1}): starting", flush=True)
    try:
        with server:
            phases = {}
            for conc, n in ((1, args.requests_c1), (8, args.requests_c8)):
                p = phases[str(conc)] = asyncio.run(run_load(server, conc, n, args.max_tokens, conc * 100))
                print(
                    f"[{model}] {server.name} c={conc}: {p['tokens_per_s']} tok/s, "
                    f"ttft p50 {p['ttft_p50_ms']} ms, errors {p['errors']}",
                    flush=True,
                )
            return phases
    except RuntimeError as exc:
        print(f"[{model}] {server.name}: {exc}", flush=True)
        return {"error": str(exc), "log_tail": server.log.read_text()[-2000:]}


def median_phases(rounds: list[dict]) -> dict:
    """Per concurrency, the median of each figure over the rounds; errors are summed."""
    good = [r for r in rounds if "error" not in r]
    if not good:
        return rounds[-1]
    summary = {}
    for conc in good[0]:
        runs = [r[conc] for r in good]
        summary[conc] = {
            key: (sum(run[key] for run in runs) if key == "errors" else statistics.median(run[key] for run in runs))
            for key in runs[0]
            if isinstance(runs[0][key], (int, float))
        }
        summary[conc]["error_samples"] = [e for run in runs for e in run["error_samples"]][:3]
        summary[conc]["rounds"] = len(runs)
    return summary


def print_table(model: str, results: dict) -> None:
    print(f"\n== {model} (medians over rounds) ==")
    print(
        f"{'system':<18}{'conc':>5}{'tok/s':>9}{'ttft p50':>10}{'ttft p99':>10}{'lat p50':>10}{'lat p99':>10}{'err':>5}"
    )
    for name, phases in results["systems"].items():
        if "error" in phases:
            print(f"{name:<18}  failed: {phases['error']}")
            continue
        for phase in phases.values():
            print(
                f"{name:<18}{phase['concurrency']:>5.0f}{phase['tokens_per_s']:>9.1f}{phase['ttft_p50_ms']:>10.1f}"
                f"{phase['ttft_p99_ms']:>10.1f}{phase['latency_p50_ms']:>10.1f}{phase['latency_p99_ms']:>10.1f}"
                f"{phase['errors']:>5}"
            )
    for peer, ratios in results["ratios"].items():
        print(f"edge-agent/{peer}: " + ", ".join(f"c={c}: {r:.2f}x" for c, r in ratios.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="gemma-3-270m,smollm2-135m-instruct")
    parser.add_argument("--llama-server", help="path to llama.cpp's llama-server binary")
    parser.add_argument("--wrk", default=shutil.which("wrk"), help="path to wrk (default: from PATH)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--requests-c1", type=int, default=16)
    parser.add_argument("--requests-c8", type=int, default=48)
    parser.add_argument("--cache-seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all systems; medians are reported")
    parser.add_argument("--skip-peers", action="store_true", help="measure the agent alone")
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
            "requests": {"1": args.requests_c1, "8": args.requests_c8},
        },
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as tmp:
        workdir = Path(tmp)
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            artifact = resolve_model(model, "", workdir / "models-cache")
            results: dict = {"sha256": artifact.sha256, "systems": {}, "ratios": {}, "rounds": {}}
            systems = systems_for(model, artifact.path, args, workdir)
            for round_no in range(args.rounds):
                # Every other round in reverse order, so a machine that drifts
                # faster or slower during the run favours nobody.
                for server in systems if round_no % 2 == 0 else systems[::-1]:
                    phases = measure(server, model, args, round_no)
                    results["rounds"].setdefault(server.name, []).append(phases)
                    first_model = model == args.models.split(",")[0].strip()
                    if server.name == "edge-agent" and first_model and round_no == 0 and "error" not in phases:
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
            agent = results["systems"].get("edge-agent", {})
            for peer, phases in results["systems"].items():
                if peer == "edge-agent" or "error" in phases or "error" in agent:
                    continue
                results["ratios"][peer] = {
                    c: round(agent[c]["tokens_per_s"] / phases[c]["tokens_per_s"], 3)
                    for c in phases
                    if phases[c]["tokens_per_s"]
                }
            report["models"][model] = results
            print_table(model, results)
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
