"""Garbage enrollment calls from many concurrent callers, as an attacker on the open enrollment port would make.

Run as its own process (the flood test, bench/enroll_flood.py), so that the process measuring heartbeats
stays responsive: `python tests/enroll_flood_client.py --address HOST:PORT --ca CA.pem --concurrency 200
--duration 60 --out RESULT.json`. It verifies central's TLS certificate (an attacker can too) and sends,
in turn, a malformed token, a well-formed but unknown token and an oversized token, each with a CSR that is
not one. It writes {"calls", "codes": {STATUS: count}, "duration_s"} to --out when done.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import secrets
import sys
import time
from collections import Counter
from pathlib import Path

import grpc

from edgefleet import channels
from edgefleet.v1 import enrollment_pb2, enrollment_pb2_grpc

CALLERS_PER_CHANNEL = 10


def garbage() -> list[enrollment_pb2.EnrollRequest]:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    unknown = (
        "".join(secrets.choice(alphabet) for _ in range(6)) + "." + "".join(secrets.choice(alphabet) for _ in range(32))
    )
    csr = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    return [
        enrollment_pb2.EnrollRequest(token="not-a-token", csr_pem=csr, hostname="x" * 64),
        enrollment_pb2.EnrollRequest(token=unknown, csr_pem=csr, hostname="flood"),
        enrollment_pb2.EnrollRequest(token="\x1b[2J" + "A" * 4000, csr_pem="junk"),
    ]


async def flood(address: str, ca_pem: bytes, concurrency: int, duration_s: float) -> dict:
    codes: Counter[str] = Counter()
    requests = garbage()
    deadline = time.monotonic() + duration_s
    credentials = grpc.ssl_channel_credentials(ca_pem)
    n_channels = max(1, concurrency // CALLERS_PER_CHANNEL)
    chans = [grpc.aio.secure_channel(address, credentials, options=channels.CLIENT_OPTIONS) for _ in range(n_channels)]

    async def caller(i: int) -> None:
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(chans[i % n_channels])
        for request in itertools.cycle(requests[i % len(requests) :] + requests[: i % len(requests)]):
            if time.monotonic() >= deadline:
                return
            try:
                await stub.Enroll(request, timeout=10)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] += 1

    started = time.monotonic()
    try:
        await asyncio.gather(*(caller(i) for i in range(concurrency)))
    finally:
        for channel in chans:
            await channel.close()
    return {"calls": sum(codes.values()), "codes": dict(codes), "duration_s": time.monotonic() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--ca", required=True, type=Path, help="the fleet CA certificate (PEM)")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority by N")
    args = parser.parse_args(argv)
    os.nice(args.nice)
    result = asyncio.run(flood(args.address, args.ca.read_bytes(), args.concurrency, args.duration))
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
