"""``edge-agent``: the daemon's command line. Configures logging; everything else is a call."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from edge_agent import __version__
from edge_agent.config import ConfigError, load_config, with_overrides
from edge_agent.errors import AgentError
from edgefleet import logs
from edgefleet.terminal import exits_quietly_when_the_reader_leaves


@exits_quietly_when_the_reader_leaves
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
    enroll.add_argument(
        "--ca-fingerprint", required=True, help="sha256:HEX of the fleet CA, from `edgefleet token create`"
    )
    enroll.add_argument(
        "--token-file",
        help=f"a file holding the bootstrap token ID.SECRET ('-' for stdin); or set ${TOKEN_ENV}",
    )
    enroll.add_argument(
        "--token", help=f"the bootstrap token on the command line: `ps` and shell history show it; prefer ${TOKEN_ENV}"
    )
    enroll.add_argument("--config", help="TOML config file (for its data_dir)")
    enroll.add_argument("--data-dir", help="where the node's key and certificate are kept")

    status = sub.add_parser("status", help="show enrollment, connection to central and serving state")
    status.add_argument("--config", help="TOML config file (for its data_dir)")
    status.add_argument("--data-dir", help="the agent's data dir")
    status.add_argument("--json", action="store_true", help="print JSON for scripts")

    addresses = sub.add_parser(
        "central-addresses",
        help="show the central addresses this node dials; `set` points it at others (a central restored elsewhere)",
    )
    addresses.add_argument("--config", help="TOML config file (for data_dir and central.addresses)")
    addresses.add_argument("--data-dir", help="the agent's data dir")
    addresses.add_argument("--json", action="store_true", help="print JSON for scripts")
    addresses_sub = addresses.add_subparsers(dest="addresses_command")
    addresses_set = addresses_sub.add_parser(
        "set",
        help="replace the addresses in fleet/fleet.json; a running agent dials them at its next reconnect",
    )
    addresses_set.add_argument("address", nargs="+", help="HOST:PORT of central's FleetService (port 7443), in turn")
    # SUPPRESS: given before `set` or after it, the parent's value is not overwritten by a default here.
    addresses_set.add_argument("--config", default=argparse.SUPPRESS, help="TOML config file (for its data_dir)")
    addresses_set.add_argument("--data-dir", default=argparse.SUPPRESS, help="the agent's data dir")
    addresses_set.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts")

    label = sub.add_parser("label", help="label prompts for federated learning (the sensitivity task)")
    label.add_argument("label", choices=["sensitive", "public"], help="what the text is")
    label.add_argument("text", nargs="?", help="the prompt text (or --file)")
    label.add_argument("--file", help="a text file, one prompt a line, all with this label ('-' for stdin)")
    label.add_argument("--config", help="TOML config file (for its data_dir)")
    label.add_argument("--data-dir", help="the agent's data dir")

    keys = sub.add_parser("keys", help="manage the API keys clients authenticate with (add, list, revoke)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_add = keys_sub.add_parser("add", help="make a key for a tenant; prints its secret once")
    keys_add.add_argument("--tenant", required=True, help="who the key is for (letters, digits, '.', '_', '-')")
    keys_add.add_argument("--max-class", help="the most sensitive data class it may send (default: the top class)")
    keys_add.add_argument("--rate", type=float, default=10.0, help="sustained requests per second (default 10)")
    keys_add.add_argument("--burst", type=int, default=20, help="requests allowed at once (default 20)")
    keys_add.add_argument("--json", action="store_true", help="print JSON for scripts")
    keys_list = keys_sub.add_parser("list", help="list the keys (ids, tenants, limits; never secrets)")
    keys_list.add_argument("--json", action="store_true", help="print JSON for scripts")
    keys_revoke = keys_sub.add_parser("revoke", help="remove a key; a running agent refuses it within seconds")
    keys_revoke.add_argument("key_id", help="the key's id, k_..., from `edge-agent keys list`")
    for command in (keys_add, keys_list, keys_revoke):
        command.add_argument("--config", help="TOML config file (for data_dir, auth.keys_file and policy.classes)")
        command.add_argument("--data-dir", help="the agent's data dir")

    audit = sub.add_parser("audit", help="the routing audit: every routing decision on this box, hash-chained")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    audit_list = audit_sub.add_parser("list", help="recorded routing decisions, oldest first")
    audit_list.add_argument("--after", type=int, default=0, help="only entries after this sequence")
    audit_list.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    audit_list.add_argument("--json", action="store_true", help="print JSON for scripts")
    audit_verify = audit_sub.add_parser("verify", help="check the routing audit's hash chain")
    audit_verify.add_argument("--json", action="store_true", help="print JSON for scripts")
    for command in (audit_list, audit_verify):
        command.add_argument("--config", help="TOML config file (for its data_dir)")
        command.add_argument("--data-dir", help="the agent's data dir")

    doctor = sub.add_parser(
        "doctor",
        help="what acceleration this box has (GPU, CUDA, onnxruntime, llama.cpp, "
        "memory) against what the config asks for; exit 1 on a FAIL",
    )
    doctor.add_argument("--config", help="TOML config file (model, n_gpu_layers, embeddings.engine, data_dir)")
    doctor.add_argument("--data-dir", help="the agent's data dir")
    doctor.add_argument("--json", action="store_true", help="print JSON for scripts")

    supernode_venv = sub.add_parser(
        "supernode-venv",
        help="build the SuperNode's own venv from a Python 3.11+, so an agent on Python 3.10 (JetPack 6) takes "
        "part in federated learning",
    )
    supernode_venv.add_argument("--python", required=True, help="a Python 3.11 or later, e.g. /usr/bin/python3.11")
    supernode_venv.add_argument(
        "--dest", help="where to build it (default: <the agent's venv>/supernode, where the agent looks for it)"
    )
    supernode_venv.add_argument(
        "--find-links", default="", help="install offline from this wheel directory (the Debian package's)"
    )
    supernode_venv.add_argument("--json", action="store_true", help="print JSON for scripts")

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "enroll":
            return _enroll(args)
        if args.command == "status":
            return _status(args)
        if args.command == "central-addresses":
            return _central_addresses(args)
        if args.command == "label":
            return _label(args)
        if args.command == "keys":
            return _keys(args)
        if args.command == "audit":
            return _audit(args)
        if args.command == "doctor":
            return _doctor(args)
        if args.command == "supernode-venv":
            return _supernode_venv(args)
        return _models(args)
    except ConfigError as exc:
        print(f"edge-agent: config error: {exc}", file=sys.stderr)
        return 2
    except AgentError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    overrides = {"listen": args.listen, "model": args.model, "data_dir": args.data_dir}
    config = with_overrides(load_config(args.config), **overrides)
    logs.configure(config.log_level)
    from edge_agent.daemon import serve  # heavy imports only when serving

    serve(config, args.config, overrides)  # SIGHUP re-reads args.config with the same flags
    return 0


def _data_dir(args: argparse.Namespace):
    return with_overrides(load_config(args.config), data_dir=args.data_dir).data_path


# Where `edge-agent enroll` reads the bootstrap token when neither --token-file nor --token is given.
TOKEN_ENV = "EDGEFLEET_TOKEN"


class TokenSourceError(AgentError, ValueError):
    """No usable bootstrap token among --token-file, --token and $EDGEFLEET_TOKEN; the message says what to give."""


def bootstrap_token(
    flag: str | None, token_file: str | None, environ: Mapping[str, str], stdin: TextIO | None = None
) -> tuple[str, list[str]]:
    """The bootstrap token and the warnings to print about how it came: from ``token_file`` ('-': stdin), else
    ``flag`` (--token: every local user sees a process's argv in `ps`, and the shell keeps it in its history),
    else $EDGEFLEET_TOKEN. A token file others may read is a warning, an empty one an error."""
    if flag is not None and token_file is not None:
        raise TokenSourceError("give the token once: --token-file or --token, not both")
    warnings: list[str] = []
    if token_file is not None:
        if token_file == "-":
            token = (stdin or sys.stdin).readline()
        else:
            path = Path(token_file)
            try:
                mode = path.stat().st_mode & 0o777
                token = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise TokenSourceError(f"--token-file {token_file}: {exc.strerror or exc}") from None
            except UnicodeDecodeError:
                raise TokenSourceError(f"--token-file {token_file}: not a text file") from None
            if mode & 0o044:
                warnings.append(
                    f"the token file {token_file} is readable by {'group and others' if mode & 0o004 else 'its group'}"
                    f" (mode {mode:04o}); keep tokens owner-only: chmod 600 {token_file}"
                )
        where = "stdin" if token_file == "-" else f"the token file {token_file}"
    elif flag is not None:
        token, where = flag, "--token"
        warnings.append(
            "--token puts the bootstrap token on the command line, where `ps` shows it to every local user and the"
            f" shell keeps it in its history; use --token-file FILE (mode 0600) or ${TOKEN_ENV} instead"
        )
    elif environ.get(TOKEN_ENV):
        token, where = environ[TOKEN_ENV], f"${TOKEN_ENV}"
    else:
        raise TokenSourceError(
            f"no bootstrap token: set ${TOKEN_ENV}, or give --token-file FILE (the token from `edgefleet token create`)"
        )
    token = token.strip()
    if not token:
        raise TokenSourceError(f"{where} holds no token")
    return token, warnings


def _enroll(args: argparse.Namespace) -> int:
    from edge_agent.control.client import enroll
    from edge_agent.control.identity import FleetFiles
    from edgefleet.privatedir import make_private_dir

    try:
        token, warnings = bootstrap_token(args.token, args.token_file, os.environ)
    except TokenSourceError as exc:
        print(f"edge-agent enroll: {exc}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"edge-agent enroll: warning: {warning}", file=sys.stderr)
    data_dir = _data_dir(args)
    files = FleetFiles(data_dir)
    make_private_dir(files.root)  # it and the data dir 0700 whatever the umask: the node's key lives there
    identity = enroll(args.central, args.ca_fingerprint, token, files)
    labels = ",".join(f"{k}={v}" for k, v in sorted(identity.labels.items())) or "no labels"
    print(f"enrolled as {identity.node_id} ({labels}); reporting to {identity.central}")
    print(f"key and certificate in {files.root}; `edge-agent serve` with this data dir reports to central")
    return 0


def _label(args: argparse.Namespace) -> int:
    from federated.errors import TaskError
    from federated.local_data import append_example, examples_path, parse_example

    if (args.text is None) == (args.file is None):
        print("edge-agent label: give the text or --file, not both", file=sys.stderr)
        return 2
    if args.file:
        with sys.stdin if args.file == "-" else open(args.file, encoding="utf-8") as lines:
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


def _keys(args: argparse.Namespace) -> int:
    from edge_agent import access

    config = with_overrides(load_config(args.config), data_dir=args.data_dir)
    path = access.keys_path(config)
    class_names = [c.name for c in config.policy.classes]
    try:
        if args.keys_command == "add":
            max_class = args.max_class if args.max_class is not None else class_names[-1]
            secret, key = access.add_key(path, args.tenant, max_class, args.rate, args.burst, class_names)
            _print_new_key(secret, key, path, args.json)
        elif args.keys_command == "list":
            _print_keys(access.list_keys(path, class_names), path, args.json)
        else:
            key = access.revoke_key(path, args.key_id)
            print(f"revoked {key.key_id} (tenant {key.tenant}); a running agent refuses it within seconds")
    except access.AccessError as exc:
        print(f"edge-agent keys {args.keys_command}: {exc}", file=sys.stderr)
        return 2
    return 0


def _key_row(key) -> dict:
    """What lists show of a key: never its hash."""
    return {
        "key_id": key.key_id,
        "tenant": key.tenant,
        "max_data_class": key.max_data_class,
        "rate_per_s": key.rate_per_s,
        "burst": key.burst,
        "created_at": key.created_at,
    }


def _print_new_key(secret: str, key, path, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**_key_row(key), "secret": secret, "keys_file": str(path)}, indent=2))
        return
    print(
        f"added API key {key.key_id} for tenant {key.tenant} (max class {key.max_data_class}, "
        f"{key.rate_per_s:g} requests/s, burst {key.burst}) to {path}"
    )
    print(f"secret: {secret}")
    print(
        "It is shown only now (the agent keeps only its hash). Send it as "
        f"`Authorization: Bearer {secret}`, or set OPENAI_API_KEY={secret} for the openai client."
    )


def _print_keys(keys: list, path, as_json: bool) -> None:
    import datetime as dt

    rows = [_key_row(k) for k in keys]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print(f"no API keys in {path}; add one with `edge-agent keys add --tenant NAME`")
        return
    table = [("KEY ID", "TENANT", "MAX CLASS", "RATE/S", "BURST", "CREATED (UTC)")]
    for r in rows:
        created = dt.datetime.fromtimestamp(r["created_at"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        table.append((r["key_id"], r["tenant"], r["max_data_class"], f"{r['rate_per_s']:g}", str(r["burst"]), created))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _audit(args: argparse.Namespace) -> int:
    """Reads the file the running agent writes (WAL): never opens it for writing."""
    import dataclasses
    import datetime as dt

    from edge_agent.routing_audit import audit_path, read_entries, verify_file

    path = audit_path(_data_dir(args))
    if args.audit_command == "verify":
        check = verify_file(path)
        if args.json:
            print(json.dumps({**dataclasses.asdict(check), "path": str(path)}, indent=2))
        elif check.intact:
            print(f"routing audit intact: {check.entries_checked} entries chained ({path})")
        else:
            print(f"routing audit BROKEN at entry {check.first_bad_sequence}: {check.problem} ({path})")
        return 0 if check.intact else 1
    rows = read_entries(path, args.after, max(1, min(args.limit, 100_000)))
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return 0
    table = [("SEQ", "AT (UTC)", "TENANT", "ENDPOINT", "CLASS", "DETECTORS", "ROUTE", "REASON", "STATUS", "PROMPT")]
    for r in rows:
        at = dt.datetime.fromtimestamp(r.at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        table.append(
            (
                str(r.sequence),
                at,
                r.tenant or "-",
                r.endpoint,
                r.data_class,
                ",".join(r.detectors) or "-",
                r.route,
                r.reason,
                str(r.status),
                r.prompt_hash[:12],
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _central_addresses(args: argparse.Namespace) -> int:
    """Show (or, with `set`, replace) central's addresses in fleet/fleet.json: how an operator points enrolled
    agents at a central restored on another machine. The node keeps its identity; nothing is enrolled again."""
    from edge_agent.control import policy
    from edge_agent.control.identity import FleetFiles

    config = with_overrides(load_config(args.config), data_dir=args.data_dir)
    files = FleetFiles(config.data_path)
    if not files.enrolled():
        print(f"edge-agent central-addresses: {config.data_path} is not enrolled (no {files.meta})", file=sys.stderr)
        return 1
    if args.addresses_command == "set":
        try:
            addresses = policy.check_fleet_addresses(args.address)
        except ValueError as exc:
            print(f"edge-agent central-addresses set: {exc}; fleet.json unchanged", file=sys.stderr)
            return 2
        try:
            files.save_fleet_addresses(addresses)
        except (OSError, ValueError) as exc:  # a fleet.json edited by hand into something else: said, not repaired
            print(f"edge-agent central-addresses set: cannot update it: {exc}; fleet.json unchanged", file=sys.stderr)
            return 1
    try:
        central, enrolled = files.load_addresses()
    except (OSError, ValueError) as exc:
        print(
            f"edge-agent central-addresses: {exc}; `edge-agent central-addresses set HOST:PORT` replaces them",
            file=sys.stderr,
        )
        return 1
    configured = list(config.central.addresses)
    state = files.read_state() or {}
    report = {
        "fleet_json": str(files.meta),
        "fleet_addresses": list(policy.central_addresses((), enrolled, central)),
        "config_addresses": configured,
        "dialled": list(policy.central_addresses(configured, enrolled, central)),
        "daemon_last_dialled": state.get("central", ""),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"fleet.json:  {', '.join(report['fleet_addresses'])} ({files.meta})")
        if configured:
            print(f"config:      {', '.join(configured)} (central.addresses: these win over fleet.json)")
        if report["daemon_last_dialled"]:
            print(f"daemon:      last dialled {report['daemon_last_dialled']}")
        if args.addresses_command == "set":
            print("a running agent dials the new addresses at its next reconnect; no restart needed")
    if args.addresses_command == "set" and configured:
        print(
            f"edge-agent central-addresses set: warning: the config's central.addresses ({', '.join(configured)})"
            " still win; remove them for fleet.json's to be dialled",
            file=sys.stderr,
        )
    return 0


def _status(args: argparse.Namespace) -> int:
    from edge_agent.control.status import describe, gather
    from edgefleet.terminal import printable

    report = gather(_data_dir(args))
    if args.json:
        print(json.dumps(report, indent=2))  # ASCII-only: json.dumps escapes controls and bidi characters
        return 0
    # Central's strings (node id, labels, model names) shown with their control and bidi characters escaped.
    for line in describe(report).splitlines():
        print(printable(line))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from edge_agent import doctor

    report = doctor.run(with_overrides(load_config(args.config), data_dir=args.data_dir), args.config)
    print(json.dumps(report.as_json(), indent=2) if args.json else doctor.describe(report))
    return report.exit_code


def _supernode_venv(args: argparse.Namespace) -> int:
    from federated import supernode_runtime

    dest = Path(args.dest) if args.dest else supernode_runtime.bundled_venv()
    print(f"building the SuperNode venv at {dest} from {args.python}", file=sys.stderr)
    try:
        built = supernode_runtime.build_supernode_venv(args.python, dest, args.find_links)
    except supernode_runtime.VenvBuildError as exc:
        print(f"edge-agent: supernode-venv: {exc}", file=sys.stderr)
        return 1
    config_line = f'[federated] python = "{args.python}"' if not args.dest else f'[federated] python = "{built.python}"'
    if args.json:
        print(json.dumps({**built.as_json(), "venv": str(dest), "config": config_line}, indent=2))
    else:
        print(f"{built.summary()}: ready.")
        if args.dest:
            print(f"Set {config_line} and [federated] enabled = true in the agent's config, then restart the agent.")
        else:
            print(
                "Set [federated] enabled = true in the agent's config and restart the agent: an agent on Python "
                f"3.10 finds this venv by itself (or name its interpreter: {config_line})."
            )
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
