"""The agent's [federated] table (edge_agent.config)."""

import pytest

from edge_agent.config import ConfigError, load_config, parse_config


def test_federated_table_parses(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text('[federated]\nenabled = true\nsupernode = "fast"\nclientappio_port = 9094\n')
    config = load_config(path)
    assert (config.federated.enabled, config.federated.supernode, config.federated.clientappio_port) == (
        True,
        "fast",
        9094,
    )
    defaults = load_config(None).federated
    assert (defaults.enabled, defaults.supernode, defaults.clientappio_port) == (False, "fast", 0)


@pytest.mark.parametrize(
    "table, message",
    [
        ({"supernode": "grpc"}, "federated.supernode: expected 'flower' or 'fast', got 'grpc'"),
        ({"clientappio_port": 70000}, "federated.clientappio_port: expected 0..65535, got 70000"),
        ({"clientappio_port": -1}, "federated.clientappio_port: expected 0..65535"),
        ({"enabled": "yes"}, "federated.enabled: expected bool, got str 'yes'"),
        ({"clientappio_port": True}, "federated.clientappio_port: expected int, got a boolean"),
        ({"port": 1}, "federated.port: unknown key"),
    ],
)
def test_federated_table_bad_values_name_the_key(table, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"federated": table})
