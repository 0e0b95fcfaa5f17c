"""`[federated] supernode = "flower"` (the stock SuperNode runs a bundle's code) needs the operator's explicit yes."""

import pytest

from edge_agent.config import ConfigError, load_config


def _write(tmp_path, federated: str):
    path = tmp_path / "agent.toml"
    path.write_text(f"[federated]\nenabled = true\n{federated}\n")
    return path


def test_stock_supernode_without_accepting_code_bundles_is_refused_at_load(tmp_path):
    with pytest.raises(ConfigError) as refused:
        load_config(_write(tmp_path, 'supernode = "flower"'))
    message = str(refused.value)
    assert "federated.supernode = 'flower'" in message and "federated.accept_code_bundles = true" in message


def test_stock_supernode_with_code_bundles_accepted_loads(tmp_path):
    config = load_config(_write(tmp_path, 'supernode = "flower"\naccept_code_bundles = true'))
    assert config.federated.supernode == "flower" and config.federated.accept_code_bundles is True


@pytest.mark.parametrize("extra", ["", "accept_code_bundles = false", "accept_code_bundles = true"])
def test_the_fast_supernode_needs_no_such_acceptance(tmp_path, extra):
    config = load_config(_write(tmp_path, f'supernode = "fast"\n{extra}'))
    assert config.federated.supernode == "fast"


def test_accept_code_bundles_must_be_a_boolean(tmp_path):
    with pytest.raises(ConfigError, match="accept_code_bundles"):
        load_config(_write(tmp_path, 'supernode = "flower"\naccept_code_bundles = "yes"'))
