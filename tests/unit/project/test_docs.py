"""The docs match the code: every command, config key and metric is documented, and every link resolves.

The README is the five-minute page; `docs/` holds the rest. Each command of `edge-agent` and `edgefleet`
has a section in docs/ headed with its name that carries its help text and its flags (the parsers are
read from the entry points pyproject.toml names, so a moved CLI module is followed); every key of the
agent's config dataclasses is in the example TOML and in its section of docs/configuration.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import sys
import typing
from pathlib import Path

import pytest

from edge_agent.config import AgentConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # JetPack 6 ships Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[3]
README = (ROOT / "README.md").read_text()
DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCS = "\n".join(page.read_text() for page in DOC_PAGES)
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
EXAMPLE = (ROOT / "packaging" / "edge-agent.example.toml").read_text()
# Pages whose links are checked: the README, docs/, and the files beside the README.
LINKED_PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md", *DOC_PAGES]
# Links leave the repository only for upstream projects' own documentation.
EXTERNAL_HOSTS = {"flower.ai", "keepachangelog.com", "semver.org"}


def _normalized(text: str) -> str:
    return " ".join(text.split()).lower()


def _section(text: str, heading: str) -> str:
    """The text under the heading ``heading`` (the whole heading line), up to the next heading of its level."""
    match = re.search(rf"^(#+) {re.escape(heading)}$", text, re.M)
    assert match, f"no heading with {heading}"
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, match.end())
    return text[match.end() : end.start() if end else len(text)]


# -- the command lines ------------------------------------------------------------------------------------------------


class _Parsed(BaseException):
    """Raised in place of parsing; a BaseException, so no ``except Exception`` in a CLI swallows it."""


def _parser(program: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser a console script's main builds, caught as it is about to parse."""
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"][program]
    module, _, function = target.partition(":")
    main = getattr(importlib.import_module(module), function)

    def caught(parser, *args, **kwargs):
        raise _Parsed(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", caught)
    with pytest.raises(_Parsed) as parsed:
        main([])
    return parsed.value.args[0]


def _commands(parser: argparse.ArgumentParser, name: str, help_text: str | None = None):
    """(full command name, its help, its parser) for every command that runs something, groups walked."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield name, help_text, parser
        return
    if not groups[0].required:  # `central backup`, `edge-agent central-addresses`: a command with subcommands
        yield name, help_text, parser
    helps = {choice.dest: choice.help for choice in groups[0]._choices_actions}
    for command, sub in groups[0].choices.items():
        yield from _commands(sub, f"{name} {command}", helps.get(command))


def _long_flags(parser: argparse.ArgumentParser) -> list[str]:
    return [
        flag
        for action in parser._actions
        for flag in action.option_strings
        if flag.startswith("--") and flag != "--help"
    ]


@pytest.mark.parametrize("program", ["edge-agent", "edgefleet"])
def test_every_command_has_a_docs_section_with_its_help_and_flags(program, monkeypatch):
    parser = _parser(program, monkeypatch)
    for flag in _long_flags(parser):
        assert flag in DOCS, f"{program} {flag}"
    commands = list(_commands(parser, program))
    assert len(commands) > 5, commands
    for name, help_text, command_parser in commands:
        assert help_text, f"{name} has no help text"
        section = _section(DOCS, f"`{name}`")
        assert _normalized(help_text) in _normalized(section), f"{name}: its help text is not in its docs section"
        for flag in _long_flags(command_parser):
            assert flag in section, f"{name} {flag}"


# -- the agent's configuration ----------------------------------------------------------------------------------------


def _tables(cls: type) -> dict[str, type]:
    """Field name -> dataclass, for the fields that are a table or an array of tables."""
    found = {}
    for name, hint in typing.get_type_hints(cls).items():
        inner = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else hint
        if dataclasses.is_dataclass(inner):
            found[name] = inner
    return found


def _is_array(cls: type, name: str) -> bool:
    return typing.get_origin(typing.get_type_hints(cls)[name]) is tuple


def test_every_config_key_is_in_the_example_and_in_configuration_md():
    top = _section(CONFIGURATION, "Top level")
    for field in dataclasses.fields(AgentConfig):
        if field.name not in _tables(AgentConfig):
            assert re.search(rf"^{field.name} = ", EXAMPLE, re.M), field.name
            assert f"`{field.name}`" in top, field.name
    for section, cls in _tables(AgentConfig).items():
        header = f"[[{section}]]" if _is_array(AgentConfig, section) else f"[{section}]"
        assert header in EXAMPLE, header
        documented = _section(CONFIGURATION, f"`{header}`")
        for field in dataclasses.fields(cls):
            # A key, or a table of its own ([policy.detectors], [[policy.classes]]) whose keys are checked too.
            assert re.search(rf"^#?\s*({field.name} = |\[\[?{section}\.{field.name}\]\]?)", EXAMPLE, re.M), (
                f"{section}.{field.name}"
            )
            assert f"`{field.name}`" in documented, f"{section}.{field.name}"
            for sub in dataclasses.fields(_tables(cls)[field.name]) if field.name in _tables(cls) else ():
                assert re.search(rf"^#?\s*{sub.name} = ", EXAMPLE, re.M), f"{section}.{field.name}.{sub.name}"
                assert f"`{sub.name}`" in documented, f"{section}.{field.name}.{sub.name}"


# -- metrics ----------------------------------------------------------------------------------------------------------


def test_every_metric_is_in_the_docs():
    sources = "".join(p.read_text() for p in (ROOT / "edge_agent").rglob("*.py"))
    names = set(re.findall(r'"(edgefleet_[a-z_]+)"', sources))
    # prometheus_client exposes counters with a _total suffix.
    counters = set(re.findall(r'\b(?:Counter|CounterMetricFamily)\(\s*"(edgefleet_[a-z_]+)"', sources))
    assert names and counters <= names
    for name in names:
        assert (name + "_total" if name in counters else name) in DOCS, name


def _exported_metric_names() -> set[str]:
    """Every metric family the agent and central export, by the name a scrape shows (counters as _total)."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from central import convert
    from central.fleet_metrics import FleetMetrics, StoreSnapshot
    from edge_agent.metrics import AgentMetrics
    from edge_agent.scheduler import SchedulerStats
    from edgefleet.v1 import common_pb2

    agent = AgentMetrics(
        model_info=lambda: {"model": "m", "model_version": "m@1"},
        scheduler_stats=lambda: SchedulerStats(queue_depth=0, inflight=0, slots=1),
        cache_stats=lambda: None,
        onnx_providers=lambda: ["CPUExecutionProvider"],
        upstream_states=lambda: {"cloud": "closed"},
    )
    snapshot = StoreSnapshot({"online": 1}, {("m", "1"): 1}, {"running": 1}, {"running": 1})
    fleet = FleetMetrics(("region",), 1.0, lambda: snapshot, ("rate limited",), lambda: 0.0)
    status = common_pb2.NodeStatus()
    status.inference.requests = 1
    status.inference.latency_buckets.extend([1])
    status.inference.ttft_buckets.extend([1])
    status.inference.upstream_usage.add(upstream="cloud", requests=1, prompt_tokens=1, cost=0.1, currency="USD")
    status.routing.counts.add(data_class="public", route="local", count=1)
    fleet.heartbeat("n1", status, {"region": "eu"}, convert.routing_report(status))
    fleet.enrolled()
    fleet.enrollment_refused("rate limited")
    names = set()
    for text in (agent.render().decode(), generate_latest(fleet.registry()).decode()):
        for family in text_string_to_metric_families(text):
            if family.name.endswith("_created"):
                continue  # prometheus_client's creation timestamps of counters and histograms, not metrics of ours
            names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def test_every_exported_metric_is_named_in_the_readme_and_the_docs():
    """The README lists every metric by name (the issue's 'documents every metric'); docs/ has the tables."""
    names = _exported_metric_names()
    assert any(n.startswith("edgefleet_fleet_") for n in names) and "edgefleet_prompt_tokens_total" in names
    missing_readme = sorted(n for n in names if f"`{n}`" not in README)
    missing_docs = sorted(n for n in names if n not in DOCS)
    assert not missing_readme, f"not in the README: {missing_readme}"
    assert not missing_docs, f"not in docs/: {missing_docs}"


# -- the README and links ---------------------------------------------------------------------------------------------


def test_the_readme_is_a_five_minute_page_with_the_two_commands():
    # Five minutes of reading: the Quick start, the architecture, operations, security, and every metric by name.
    assert len(README.splitlines()) < 250
    quick_start = _section(README, "Quick start")
    assert re.search(r"^make run\s", quick_start, re.M) and re.search(r"^make test\s", quick_start, re.M)
    for page in DOC_PAGES:
        assert f"(docs/{page.name})" in README, f"the README does not link docs/{page.name}"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _links(page: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)  # not inside code blocks
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page):
    if not page.exists():
        pytest.skip(f"{page.name} not written yet")
    for link in _links(page):
        if re.match(r"[a-z]+://", link):
            host = re.match(r"[a-z]+://([^/:]+)", link).group(1)
            assert host in EXTERNAL_HOSTS, f"{page.name}: {link} leaves the repository"
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {link} does not resolve"
        assert ROOT in target.parents or target == ROOT, f"{page.name}: {link} leaves the repository"
        if anchor:
            assert target.suffix == ".md", f"{page.name}: {link}"
            headings = re.findall(r"^#+ (.*)$", target.read_text(), re.M)
            assert anchor in {_anchor(h) for h in headings}, f"{page.name}: {link}: no such heading"
