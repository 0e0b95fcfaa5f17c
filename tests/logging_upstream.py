"""A real OpenAI-compatible HTTP server that writes down every request it receives: the attacker's view of what
left the box. Run as a process (``python tests/logging_upstream.py --log FILE --address-file FILE``); it binds a
free port on 127.0.0.1, writes HOST:PORT to the address file once it listens, and appends one JSON line per
request to the log ({"method", "path", "body"}: the body as the raw text received) before it answers.

It answers ``GET /v1/models``, and ``POST /v1/chat/completions`` and ``/v1/completions`` with a fixed answer in
OpenAI's shape, as JSON or, when the body asks for ``"stream": true``, as server-sent events. A JSON answer
carries ``usage`` (USAGE); a stream ends with OpenAI's usage-only chunk (STREAM_USAGE) when the body asks for
``stream_options: {"include_usage": true}``. Asked for a model whose name starts with ``no-usage``, it sends no
usage at all, as some OpenAI-compatible servers do.

An upstream gone wrong, by the model asked for (N bytes): ``huge-json:N`` answers a JSON body of about N bytes
with its Content-Length, ``huge-chunked:N`` the same without one (read until the connection closes),
``huge-stream:N`` about N bytes of small SSE events, ``huge-event:N`` one SSE event of N bytes. It stops writing
when the reader hangs up, and writes down how far it got in ``huge.jsonl`` beside the log ({"model", "written",
"cut"}: :meth:`LoggingUpstream.huge_answers`).

:func:`start_logging_upstream` runs it for a test; :meth:`LoggingUpstream.stop` ends it by its pid.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STARTUP_TIMEOUT_S = 60  # generous: a busy machine imports and starts slowly
ANSWER = "logged"
USAGE = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
STREAM_USAGE = {"prompt_tokens": 17, "completion_tokens": 2, "total_tokens": 19}


class _Handler(BaseHTTPRequestHandler):
    log_file = None  # set by main()
    lock = threading.Lock()

    def do_GET(self):
        self._log(b"")
        if self.path.rstrip("/") == "/v1/models":
            self._json(
                200,
                {
                    "object": "list",
                    "data": [{"id": "logged-model", "object": "model", "created": 0, "owned_by": "logging-upstream"}],
                },
            )
        else:
            self._json(
                404,
                {
                    "error": {
                        "message": f"no route {self.path}",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "not_found",
                    }
                },
            )

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        self._log(raw)
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        chat = self.path.endswith("/chat/completions")
        if not chat and not self.path.endswith("/completions"):
            return self._json(
                404,
                {
                    "error": {
                        "message": f"no route {self.path}",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "not_found",
                    }
                },
            )
        model = body.get("model", "")
        if model.startswith("huge-"):
            return self._huge(model)
        with_usage = not model.startswith("no-usage")
        if body.get("stream"):
            options = body.get("stream_options")
            asked = isinstance(options, dict) and options.get("include_usage") is True
            return self._events(chat, model, with_usage and asked)
        choice = (
            {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}
            if chat
            else {"index": 0, "text": ANSWER, "logprobs": None, "finish_reason": "stop"}
        )
        answer = {
            "id": "logged-1",
            "object": "chat.completion" if chat else "text_completion",
            "created": 0,
            "model": model,
            "choices": [choice],
        }
        self._json(200, {**answer, "usage": USAGE} if with_usage else answer)

    def _huge(self, model: str) -> None:
        kind, _, size = model.partition(":")
        n = int(size)
        piece = 64 * 1024
        written, cut = 0, False

        def write(data: bytes) -> None:
            nonlocal written
            self.wfile.write(data)
            written += len(data)

        try:
            if kind in ("huge-json", "huge-chunked"):
                head, tail = b'{"id":"huge","object":"chat.completion","choices":[{"index":0,"text":"', b'"}]}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if kind == "huge-json":
                    self.send_header("Content-Length", str(len(head) + n + len(tail)))
                self.end_headers()
                write(head)
                for start in range(0, n, piece):
                    write(b"x" * min(piece, n - start))
                write(tail)
            else:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                if kind == "huge-event":
                    write(b"data: ")
                    for start in range(0, n, piece):
                        write(b"x" * min(piece, n - start))
                    write(b"\n\n")
                else:
                    event = b'data: {"choices":[{"index":0,"text":"xxxxxxxxxxxxxxxx"}]}\n\n'
                    for _ in range(0, n, len(event) * 100):
                        write(event * 100)
                write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            cut = True  # the reader hung up on the answer: what a capped reader does
        self.close_connection = True
        with self.lock, open(Path(self.log_file.name).with_name("huge.jsonl"), "a", encoding="utf-8") as record:
            record.write(json.dumps({"model": model, "written": written, "cut": cut}) + "\n")

    def _events(self, chat: bool, model: str, usage: bool = False) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for piece in (ANSWER[:3], ANSWER[3:]):
            choice = (
                {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                if chat
                else {"index": 0, "text": piece, "finish_reason": None}
            )
            chunk = {
                "id": "logged-1",
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": 0,
                "model": model,
                "choices": [choice],
            }
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()
        if usage:
            last = {
                "id": "logged-1",
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": 0,
                "model": model,
                "choices": [],
                "usage": STREAM_USAGE,
            }
            self.wfile.write(b"data: " + json.dumps(last).encode() + b"\n\n")
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _json(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _log(self, raw: bytes) -> None:
        line = json.dumps(
            {"method": self.command, "path": self.path, "body": raw.decode("utf-8", "surrogateescape")},
            ensure_ascii=True,
        )
        with self.lock:
            self.log_file.write(line + "\n")
            self.log_file.flush()

    def log_message(self, format, *args):  # quiet: the log file is the record
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", required=True)
    parser.add_argument("--address-file", required=True)
    args = parser.parse_args(argv)
    with open(args.log, "a", encoding="utf-8") as log_file:
        _Handler.log_file = log_file
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
        host, port = server.server_address[:2]
        tmp = Path(args.address_file + ".tmp")
        tmp.write_text(f"{host}:{port}")
        tmp.replace(args.address_file)
        server.serve_forever()
        server.server_close()


@dataclass
class LoggingUpstream:
    proc: subprocess.Popen
    log_path: Path
    base_url: str

    def records(self) -> list[dict]:
        """Every request received so far ({"method", "path", "body"}), oldest first."""
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]

    def huge_answers(self) -> list[dict]:
        """Each huge answer sent so far ({"model", "written": bytes, "cut": the reader hung up}), oldest first."""
        path = self.log_path.with_name("huge.jsonl")
        return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []

    def posts(self) -> list[dict]:
        return [r for r in self.records() if r["method"] == "POST"]

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode


def start_logging_upstream(directory: Path) -> LoggingUpstream:
    directory.mkdir(parents=True, exist_ok=True)
    log_path, address_file = directory / "received.jsonl", directory / "address"
    with open(directory / "stderr.log", "ab") as stderr:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--log", str(log_path), "--address-file", str(address_file)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not address_file.exists():
        if proc.poll() is not None:
            raise RuntimeError(
                f"the logging upstream exited with {proc.returncode}: {(directory / 'stderr.log').read_text()}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(10)
            raise RuntimeError(f"the logging upstream did not listen within {STARTUP_TIMEOUT_S}s")
        time.sleep(0.05)
    return LoggingUpstream(proc, log_path, "http://" + address_file.read_text().strip())


if __name__ == "__main__":
    main()
