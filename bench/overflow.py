"""Overflow benchmark: a saturated box alone, against the same box bursting to an upstream, same load, one run.

Peers, one after another on the same machine:
  box alone         edge-agent with model.n_parallel = 2 and scheduler.max_queue = 2: past that it refuses (429)
  box + upstream    the same box with one upstream: a second edge-agent (n_parallel 4, max_queue 64) on the same model,
                    jurisdiction "eu"; public prompts overflow to it, internal ones (eu) leave redacted,
                    restricted ones never leave

Load: a closed loop of --clients concurrent clients for --duration seconds, each sending chat completions
(16 new tokens, temperature 0.7, Cache-Control: no-store) drawn in turn from public, internal (an email or a
phone number) and restricted (a card number, an IBAN, an SSN) prompts, 2:1:1. A client answered 429 waits
0.2 s and goes on. Reported per peer and class: answers/s, refusals, routes, latency p50/p99 of answers, and
generated tokens/s; then the ratio of answers/s with the upstream to without. The upstream's own routing
audit is read afterwards: the count of restricted prompts that reached it must be 0.

Both agents run on this machine with one engine thread each (model.n_threads = 1), so on a 2-core box each
has a core: the box alone uses one core, the box with its upstream two, as a box and a cloud endpoint would.

Results: bench/results/overflow-<date>.json. Usage:
    python bench/overflow.py [--clients 12] [--duration 40]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx
from results_file import write_results  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from agent_process import start_agent  # noqa: E402
from edge_agent.routing_audit import RoutingAudit  # noqa: E402

MODEL = "smollm2-135m-instruct"
PROMPTS = {
    "public": [
        "Name a colour of the sea.",
        "Write one line about autumn.",
        "What is a haiku?",
        "Give me a word that rhymes with cat.",
    ],
    "internal": ["Summarise the mail from jane.doe@example.com.", "Call +44 20 7946 0958 back about the offsite."],
    "restricted": [
        "Charge the card 4111 1111 1111 1111.",
        "Wire it to DE89 3704 0044 0532 0130 00.",
        "My SSN is 123-45-6789, fill in the form.",
    ],
}
MIX = ["public", "internal", "public", "restricted"]
# One core each: llama.cpp's threads wait on each other by spinning, so two engines sharing both cores of a
# small machine slow each other down several times over; pinned to one thread each, each has a core of its own.
BOX = {"model": {"n_parallel": 2, "n_threads": 1}, "scheduler": {"max_queue": 2}}
UPSTREAM = {"model": {"n_parallel": 4, "n_threads": 1}}
CLASSES = [
    {"name": "public", "jurisdictions": ["*"]},
    {"name": "internal", "jurisdictions": ["eu"], "redact": True},
    {"name": "restricted", "jurisdictions": []},
]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def client_loop(client: httpx.AsyncClient, url: str, index: int, until: float, results: list) -> None:
    turn = index
    while time.monotonic() < until:
        data_class = MIX[turn % len(MIX)]
        prompts = PROMPTS[data_class]
        text = prompts[(turn // len(MIX)) % len(prompts)]
        turn += 1
        started = time.monotonic()
        try:
            r = await client.post(
                url,
                headers={"Cache-Control": "no-store"},
                json={
                    "model": MODEL,
                    "messages": [{"role": "user", "content": text}],
                    "max_tokens": 16,
                    "temperature": 0.7,
                },
            )
        except httpx.HTTPError as exc:
            results.append({"class": data_class, "status": 0, "route": f"error: {exc}", "latency_s": 0, "tokens": 0})
            continue
        latency = time.monotonic() - started
        tokens = r.json().get("usage", {}).get("completion_tokens", 0) if r.status_code == 200 else 0
        results.append(
            {
                "class": data_class,
                "status": r.status_code,
                "route": r.headers.get("x-edgefleet-route", "?"),
                "latency_s": latency,
                "tokens": tokens,
            }
        )
        if r.status_code == 429:
            await asyncio.sleep(0.2)


async def drive(base_url: str, clients: int, duration_s: float) -> tuple[list, float]:
    results: list = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        started = time.monotonic()
        until = started + duration_s
        await asyncio.gather(
            *(client_loop(client, base_url + "/v1/chat/completions", i, until, results) for i in range(clients))
        )
        return results, time.monotonic() - started


def summarise(results: list, elapsed_s: float) -> dict:
    out: dict = {"elapsed_s": round(elapsed_s, 1)}
    for data_class in ("public", "internal", "restricted", "all"):
        rows = [r for r in results if data_class == "all" or r["class"] == data_class]
        answered = [r for r in rows if r["status"] == 200]
        routes: dict[str, int] = {}
        for r in rows:
            routes[f"{r['route']} {r['status']}"] = routes.get(f"{r['route']} {r['status']}", 0) + 1
        out[data_class] = {
            "requests": len(rows),
            "answered": len(answered),
            "answers_per_s": round(len(answered) / elapsed_s, 2),
            "refused_429": sum(1 for r in rows if r["status"] == 429),
            "other_errors": sum(1 for r in rows if r["status"] not in (200, 429)),
            "tokens_per_s": round(sum(r["tokens"] for r in answered) / elapsed_s, 1),
            "latency_p50_s": percentile([r["latency_s"] for r in answered], 0.5),
            "latency_p99_s": percentile([r["latency_s"] for r in answered], 0.99),
            "routes": routes,
        }
    return out


def upstream_received(upstream) -> dict:
    """What the upstream's own routing audit says it answered: by class, and whether any restricted prompt is there."""
    audit = RoutingAudit(upstream.data_dir / "audit" / "routing.db")
    try:
        entries = audit.entries(limit=1_000_000)
        restricted = {audit.prompt_hash(t) for t in PROMPTS["restricted"]}
        unredacted = {audit.prompt_hash(t) for t in PROMPTS["internal"]}
        return {
            "requests": len(entries),
            "detectors_fired": sum(1 for e in entries if e.detectors),
            "restricted_prompts_received": sum(1 for e in entries if e.prompt_hash in restricted),
            "unredacted_internal_prompts_received": sum(1 for e in entries if e.prompt_hash in unredacted),
        }
    finally:
        audit.close()


def run_peer(name: str, work: Path, clients: int, duration_s: float, upstream=None) -> dict:
    sections = {**BOX, "policy": {}, "policy.classes": CLASSES}
    if upstream is not None:
        sections["upstreams"] = [{"name": "eu-cloud", "url": upstream.base_url + "/v1", "jurisdiction": "eu"}]
    box = start_agent(work / name, sections=sections)
    try:
        results, elapsed = asyncio.run(drive(box.base_url, clients, duration_s))
    finally:
        box.stop()
    return summarise(results, elapsed)


def print_table(report: dict) -> None:
    print(f"\n{'peer':<16}{'class':<12}{'answers/s':>10}{'429':>7}{'tok/s':>8}{'p50 s':>8}{'p99 s':>8}  routes")
    for peer in ("box alone", "box + upstream"):
        for data_class in ("public", "internal", "restricted", "all"):
            row = report[peer][data_class]
            p50 = f"{row['latency_p50_s']:.2f}" if row["latency_p50_s"] is not None else "-"
            p99 = f"{row['latency_p99_s']:.2f}" if row["latency_p99_s"] is not None else "-"
            print(
                f"{peer:<16}{data_class:<12}{row['answers_per_s']:>10}{row['refused_429']:>7}{row['tokens_per_s']:>8}"
                f"{p50:>8}{p99:>8}  {row['routes']}"
            )
    print(
        f"\nanswers/s with the upstream / without: {report['ratio_answers_per_s']}x "
        f"(public {report['ratio_public_answers_per_s']}x)"
    )
    print(f"upstream received: {report['upstream_received']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--out", help="results file (default bench/results/overflow-<date>.json)")
    args = parser.parse_args()
    report: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "load": {
            "clients": args.clients,
            "duration_s": args.duration,
            "max_tokens": 16,
            "mix": MIX,
            "box": BOX,
            "upstream": UPSTREAM,
        },
    }
    with tempfile.TemporaryDirectory(prefix="overflow-bench-") as tmp:
        work = Path(tmp)
        report["box alone"] = run_peer("alone", work, args.clients, args.duration)
        upstream = start_agent(work / "upstream", sections=UPSTREAM)
        try:
            report["box + upstream"] = run_peer("bursting", work, args.clients, args.duration, upstream)
            report["upstream_received"] = upstream_received(upstream)
        finally:
            upstream.stop()
    alone, bursting = report["box alone"], report["box + upstream"]
    report["ratio_answers_per_s"] = round(
        bursting["all"]["answers_per_s"] / max(alone["all"]["answers_per_s"], 1e-9), 2
    )
    report["ratio_public_answers_per_s"] = round(
        bursting["public"]["answers_per_s"] / max(alone["public"]["answers_per_s"], 1e-9), 2
    )
    print_table(report)
    write_results("overflow", report, args.out)
    return 0 if report["upstream_received"]["restricted_prompts_received"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
