"""The docs match the code: every command, config key and metric is documented."""

import dataclasses
import re
from pathlib import Path

from edge_agent import config as config_module
from edge_agent.cli import main

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
EXAMPLE = (ROOT / "packaging" / "edge-agent.example.toml").read_text()


def test_every_cli_command_is_in_the_readme(capsys):
    try:
        main(["--help"])
    except SystemExit:
        pass
    commands = re.search(r"\{([a-z,-]+)\}", capsys.readouterr().out).group(1).split(",")
    for command in commands:
        assert f"edge-agent {command}" in README, command


def test_every_config_key_is_in_the_example_and_the_readme():
    tables = {**config_module._SECTIONS, **config_module._TABLE_LISTS}
    nested = {**config_module._NESTED, **config_module._SUBTABLES}
    for section, cls in tables.items():
        header = f"[[{section}]]" if section in config_module._TABLE_LISTS else f"[{section}]"
        assert header in EXAMPLE and f"`{header}`" in README, header
        for field in dataclasses.fields(cls):
            # A key, or a table of its own ([policy.detectors], [[policy.classes]]) whose keys are checked too.
            assert re.search(rf"^#?\s*({field.name} = |\[\[?{section}\.{field.name}\]\]?)", EXAMPLE, re.M), \
                f"{section}.{field.name}"
            assert f"`{field.name}`" in README, f"{section}.{field.name}"
            for sub in dataclasses.fields(nested[cls, field.name]) if (cls, field.name) in nested else ():
                assert re.search(rf"^#?\s*{sub.name} = ", EXAMPLE, re.M), f"{section}.{field.name}.{sub.name}"
                assert f"`{sub.name}`" in README, f"{section}.{field.name}.{sub.name}"


def test_every_metric_is_in_the_readme():
    sources = "".join(p.read_text() for p in (ROOT / "edge_agent").rglob("*.py"))
    for name in set(re.findall(r'"(edgefleet_[a-z_]+)"', sources)):
        counter = name in ("edgefleet_requests", "edgefleet_cache_hits", "edgefleet_cache_misses",
                           "edgefleet_rejected_overloaded", "edgefleet_generated_tokens",
                           "edgefleet_prompt_tokens", "edgefleet_cancelled_requests")
        assert (name + "_total" if counter else name) in README, name


def test_every_edgefleet_command_is_in_the_readme():
    from central.cli import build_parser

    parser = build_parser()
    groups = next(a for a in parser._actions if a.dest == "group").choices
    for group, sub in groups.items():
        subparsers = next(a for a in sub._actions if a.dest == "command")
        helps = {choice.dest: choice.help for choice in subparsers._choices_actions}
        for command, command_parser in subparsers.choices.items():
            assert f"edgefleet {group} {command}" in README, f"edgefleet {group} {command}"
            assert helps.get(command), f"edgefleet {group} {command} has no help text"
            for action in command_parser._actions:
                for flag in action.option_strings:
                    if flag.startswith("--") and flag != "--help":
                        assert flag in README, f"edgefleet {group} {command} {flag}"
