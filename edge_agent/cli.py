"""``edge-agent``: the daemon's command line. Configures logging; everything else is a call."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from edge_agent import __version__
from edge_agent.config import ConfigError, load_config, with_overrides
from edge_agent.errors import AgentError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-agent", description="edgefleet's edge LLM agent")
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the OpenAI-compatible API on a local model")
    serve.add_argument("--config", help="TOML config file (see packaging/edge-agent.example.toml)")
    serve.add_argument("--model", help="a built-in model name or a GGUF file; overrides model.name/model.path")
    serve.add_argument("--listen", help="HOST:PORT to listen on (default 127.0.0.1:8080; port 0 picks a free one)")
    serve.add_argument("--data-dir", help="where the cache and assembled models live")

    models = sub.add_parser("models", help="list the built-in models")
    models.add_argument("--json", action="store_true", help="print JSON for scripts")

    enroll = sub.add_parser("enroll", help="join a fleet: get a node certificate from central with a bootstrap token")
    enroll.add_argument("--central", required=True, help="HOST:PORT of central's enrollment service (port 7444)")
    enroll.add_argument("--ca-fingerprint", required=True, help="sha256:HEX of the fleet CA, from `edgefleet token create`")
    enroll.add_argument("--token", required=True, help="the bootstrap token, ID.SECRET")
    enroll.add_argument("--config", help="TOML config file (for its data_dir)")
    enroll.add_argument("--data-dir", help="where the node's key and certificate are kept")

    status = sub.add_parser("status", help="show enrollment, connection to central and serving state")
    status.add_argument("--config", help="TOML config file (for its data_dir)")
    status.add_argument("--data-dir", help="the agent's data dir")
    status.add_argument("--json", action="store_true", help="print JSON for scripts")

    label = sub.add_parser("label", help="label prompts for federated learning (the sensitivity task)")
    label.add_argument("label", choices=["sensitive", "public"], help="what the text is")
    label.add_argument("text", nargs="?", help="the prompt text (or --file)")
    label.add_argument("--file", help="a text file, one prompt a line, all with this label ('-' for stdin)")
    label.add_argument("--config", help="TOML config file (for its data_dir)")
    label.add_argument("--data-dir", help="the agent's data dir")

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "enroll":
            return _enroll(args)
        if args.command == "status":
            return _status(args)
        if args.command == "label":
            return _label(args)
        return _models(args)
    except ConfigError as exc:
        print(f"edge-agent: config error: {exc}", file=sys.stderr)
        return 2
    except AgentError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    config = with_overrides(load_config(args.config), listen=args.listen, model=args.model, data_dir=args.data_dir)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from edge_agent.daemon import serve  # heavy imports only when serving

    serve(config)
    return 0


def _data_dir(args: argparse.Namespace):
    return with_overrides(load_config(args.config), data_dir=args.data_dir).data_path


def _enroll(args: argparse.Namespace) -> int:
    from edge_agent.control.client import enroll
    from edge_agent.control.identity import FleetFiles

    files = FleetFiles(_data_dir(args))
    identity = enroll(args.central, args.ca_fingerprint, args.token, files)
    labels = ",".join(f"{k}={v}" for k, v in sorted(identity.labels.items())) or "no labels"
    print(f"enrolled as {identity.node_id} ({labels}); reporting to {identity.central}")
    print(f"key and certificate in {files.root}; `edge-agent serve` with this data dir reports to central")
    return 0


def _label(args: argparse.Namespace) -> int:
    from federated.local_data import append_example, examples_path, parse_example
    from federated.tasks import TaskError

    if (args.text is None) == (args.file is None):
        print("edge-agent label: give the text or --file, not both", file=sys.stderr)
        return 2
    if args.file:
        with (sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")) as lines:
            texts = [line.rstrip("\n") for line in lines if line.strip()]
    else:
        texts = [args.text]
    data_dir = _data_dir(args)
    # Every text is checked before any is written, so a bad line leaves the file as it was.
    try:
        for number, text in enumerate(texts, 1):
            parse_example(json.dumps({"text": text, "label": args.label}), f"line {number}")
        for text in texts:
            append_example(data_dir, text, args.label, "operator")
    except TaskError as exc:
        print(f"edge-agent label: {exc}; nothing added", file=sys.stderr)
        return 2
    print(f"added {len(texts)} {args.label} example{'s' if len(texts) != 1 else ''} to {examples_path(data_dir)}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from edge_agent.control.status import describe, gather

    report = gather(_data_dir(args))
    print(json.dumps(report, indent=2) if args.json else describe(report))
    return 0


def _models(args: argparse.Namespace) -> int:
    from edge_agent.models import BUILTIN_MODELS

    rows = [{"name": m.name, "package": m.distribution, "description": m.description} for m in BUILTIN_MODELS.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max(len(r["name"]) for r in rows)
        print(f"{'NAME':<{width}}  DESCRIPTION")
        for r in rows:
            print(f"{r['name']:<{width}}  {r['description']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
