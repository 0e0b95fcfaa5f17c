"""Response-cache benchmark: what an insert and a hit cost the agent's event loop as the cache fills.

The agent calls ResponseCache.get and .put on its event loop, so each figure is time the loop is held.
For each size N (--sizes), a cache file whose bound holds N answers of --value-bytes (a short completion)
is filled to the bound through ResponseCache.put, then copied, so that both peers start from the same file:

  after    edge_agent.cache.ResponseCache as it is: past the bound a put evicts the oldest rows through the
           accessed_at index, at most EVICT_BATCH_ROWS (256) a step, down to a low-water mark 1/32 under it
  before   the same class with the eviction it had before issue 16 (kept here, not in the product): every
           put past the bound flushes the pending hits and reads every row ordered by accessed_at to pick
           what to drop, down to the bound itself (so it runs again at the next put); no expiry but on read
  empty    the same class on an empty file with the same bound: the reference the issue compares with

Per peer: --hits gets of random keys of the full cache (fixed seed), then --inserts puts of new keys, each
past the bound (before: --inserts-before, it is slow); the empty peer gets a bound it never reaches, and its
hits are on the keys it was given. Each call is timed with perf_counter; medians, means, p99 and max in
microseconds. The mean insert includes the eviction steps (one per ~256 puts after, one per put
before); the max is about one eviction step. Everything runs in this one process, on the repo's disk (the
same filesystem as the agent's data dir would be), with SQLite's default page cache.

Results: bench/results/cache-<date>.json. Usage:
    python bench/cache.py [--sizes 1000,10000,100000] [--inserts 3000] [--inserts-before 200] [--hits 5000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from results_file import describe_machine, write_results  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from edge_agent.cache import ResponseCache  # noqa: E402


class BeforeIssue16Cache(ResponseCache):
    """The eviction the cache had before issue 16, for comparison only."""

    def _evict_batch_locked(self) -> bool:
        self._flush_touched_locked()
        with self._conn:
            rows = self._conn.execute("SELECT key, size FROM entries ORDER BY accessed_at ASC").fetchall()
            for key, size in rows:
                if self._bytes <= self._max_bytes:
                    break
                self._conn.execute("DELETE FROM entries WHERE key = ?", (key,))
                self._bytes -= size
                self._entries -= 1
        return False  # done: the bound holds

    def _expire_batch_locked(self, now: float) -> None:
        self._next_expiry_at = float("inf")


def key(prefix: str, i: int) -> str:
    return hashlib.sha256(f"{prefix}{i}".encode()).hexdigest()


def answer(i: int, size: int) -> bytes:
    """A completion-shaped JSON answer padded to exactly `size` bytes."""
    body = {"id": f"cmpl-{i:012d}", "object": "text_completion", "created": 1_700_000_000 + i, "model": "m"}
    text = json.dumps({**body, "choices": [{"index": 0, "text": ""}]}, separators=(",", ":"))
    pad = max(0, size - len(text))
    body["choices"] = [{"index": 0, "text": "x" * pad, "finish_reason": "length"}]
    return json.dumps(body, separators=(",", ":")).encode()[:size].ljust(size, b" ")


def percentile(ordered: list[float], q: float) -> float:
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(seconds: list[float]) -> dict:
    us = sorted(s * 1e6 for s in seconds)
    return {
        "n": len(us),
        "median_us": round(statistics.median(us), 1),
        "mean_us": round(statistics.fmean(us), 1),
        "p99_us": round(percentile(us, 0.99), 1),
        "max_us": round(us[-1], 1),
    }


def fill(path: Path, n: int, value_bytes: int) -> float:
    cache = ResponseCache(path, n * value_bytes, 1e9)
    started = time.perf_counter()
    for i in range(n):
        cache.put(key("fill", i), "sha", answer(i, value_bytes))
    elapsed = time.perf_counter() - started
    assert cache.stats().entries == n, cache.stats()
    cache.close()
    return elapsed


def time_puts(cache: ResponseCache, inserts: int, value_bytes: int) -> list[float]:
    seconds = []
    for i in range(inserts):
        k, v = key("new", i), answer(i, value_bytes)
        started = time.perf_counter()
        cache.put(k, "sha", v)
        seconds.append(time.perf_counter() - started)
    return seconds


def time_gets(cache: ResponseCache, hits: int, hit_keys: list[str]) -> list[float]:
    rand = random.Random(16)
    seconds = []
    for _ in range(hits):
        k = rand.choice(hit_keys)
        started = time.perf_counter()
        found = cache.get(k)
        seconds.append(time.perf_counter() - started)
        assert found is not None, "a hit key was evicted"
    return seconds


def bench_size(n: int, args: argparse.Namespace, work: Path) -> dict:
    full = work / f"full-{n}.db"
    fill_s = fill(full, n, args.value_bytes)
    bound = n * args.value_bytes
    result: dict = {"entries": n, "max_bytes": bound, "fill_s": round(fill_s, 2)}
    for peer, cls, inserts in (
        ("after", ResponseCache, args.inserts),
        ("before", BeforeIssue16Cache, args.inserts_before),
    ):
        path = work / f"{peer}-{n}.db"
        shutil.copyfile(full, path)
        cache = cls(path, bound, 1e9)
        # Hits first, on random keys of the whole (full, not yet evicting) cache; then puts past the bound.
        get_s = time_gets(cache, args.hits, [key("fill", i) for i in range(n)])
        put_s = time_puts(cache, inserts, args.value_bytes)
        stats = cache.stats()
        cache.close()
        assert stats.bytes <= bound, stats
        result[peer] = {"insert": summary(put_s), "hit": summary(get_s), "entries_after": stats.entries}
        print(f"  {n:>7} entries  {peer:<6} {result[peer]}", flush=True)
    # The empty reference never reaches its bound.
    empty = ResponseCache(work / f"empty-{n}.db", max(bound, 2 * args.inserts * args.value_bytes), 1e9)
    put_s = time_puts(empty, args.inserts, args.value_bytes)
    get_s = time_gets(empty, args.hits, [key("new", i) for i in range(args.inserts)])
    stats = empty.stats()
    empty.close()
    result["empty"] = {"insert": summary(put_s), "hit": summary(get_s), "entries_after": stats.entries}
    print(f"  {n:>7} entries  empty  {result['empty']}", flush=True)
    after, before, ref = result["after"], result["before"], result["empty"]
    result["ratios"] = {
        "before/after insert mean": round(before["insert"]["mean_us"] / after["insert"]["mean_us"], 1),
        "after/empty insert median": round(after["insert"]["median_us"] / ref["insert"]["median_us"], 2),
        "after/empty insert mean": round(after["insert"]["mean_us"] / ref["insert"]["mean_us"], 2),
        "after/empty hit p99": round(after["hit"]["p99_us"] / ref["hit"]["p99_us"], 2),
    }
    return result


def machine() -> dict:
    return describe_machine(sqlite=sqlite3.sqlite_version)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="entries the bound holds, comma-separated")
    parser.add_argument("--value-bytes", type=int, default=400, help="bytes of each cached answer")
    parser.add_argument("--inserts", type=int, default=3000, help="timed puts per size, after and empty")
    parser.add_argument("--inserts-before", type=int, default=200, help="timed puts per size, before")
    parser.add_argument("--hits", type=int, default=5000, help="timed gets per size and peer")
    parser.add_argument("--out", help="JSON path (default bench/results/cache-<date>.json)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    report: dict = {
        "benchmark": "cache",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "value_bytes": args.value_bytes,
        "sizes": [],
    }
    # On the repo's disk, as the agent's data dir would be, not on a tmpfs /tmp.
    (ROOT / "build").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-cache-", dir=ROOT / "build") as tmp:
        for n in sizes:
            report["sizes"].append(bench_size(n, args, Path(tmp)))
    print("\nentries  insert mean before -> after (us)  after/empty insert median, mean  after/empty hit p99")
    for r in report["sizes"]:
        ratios = r["ratios"]
        print(
            f"{r['entries']:>7}  {r['before']['insert']['mean_us']:>10.0f} -> {r['after']['insert']['mean_us']:<8.1f}"
            f" ({ratios['before/after insert mean']}x)"
            f"  {ratios['after/empty insert median']}x, {ratios['after/empty insert mean']}x"
            f"  {ratios['after/empty hit p99']}x"
        )
    write_results("cache", report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
