"""edgefleet.logs: our lines at the chosen level, other libraries' at WARNING unless the level is DEBUG."""

import logging
import os

import pytest

from edgefleet import logs


@pytest.fixture
def configured(monkeypatch, capsys):
    """configure() on the real root logger, undone afterwards."""
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)

    def run(level):
        logs.configure(level)
        capsys.readouterr()

    yield run
    for handler in root.handlers:
        if handler not in saved_handlers:
            root.removeHandler(handler)
    root.setLevel(saved_level)


def _emit_each(capsys) -> str:
    for name in (
        "central.server",
        "edge_agent.daemon",
        "federated.supervisor",
        "edgefleet.fast_supernode",
        "httpx",
        "grpc._cython.cygrpc",
        "flwr",
    ):
        logging.getLogger(name).info("%s says info", name)
        logging.getLogger(name).warning("%s says warning", name)
    return capsys.readouterr().err


def test_at_info_library_info_lines_are_dropped_and_their_warnings_kept(configured, capsys):
    configured("info")
    err = _emit_each(capsys)
    for ours in ("central.server", "edge_agent.daemon", "federated.supervisor", "edgefleet.fast_supernode"):
        assert f"{ours} says info" in err and f"{ours} says warning" in err
    for library in ("httpx", "grpc._cython.cygrpc", "flwr"):
        assert f"{library} says info" not in err and f"{library} says warning" in err


def test_at_debug_or_after_a_change_to_debug_library_lines_show(configured, capsys):
    configured("info")
    logging.getLogger().setLevel(logging.DEBUG)  # as SIGHUP or central's log-level file does
    assert "httpx says info" in _emit_each(capsys)


def test_grpc_core_info_lines_are_off_for_this_process_and_its_children(configured):
    configured("info")
    assert os.environ["GRPC_VERBOSITY"] == "ERROR"


def test_configure_twice_leaves_one_handler_and_keeps_others(configured, capsys):
    root = logging.getLogger()
    before = len(root.handlers)
    configured("info")
    configured("warning")
    assert len(root.handlers) == before + 1
    logging.getLogger("central.server").info("hidden at warning")
    assert "hidden at warning" not in capsys.readouterr().err


def test_records_go_to_stderr_as_it_is_when_written_not_when_configured(monkeypatch):
    """A handler bound to the stderr of configure()'s time wrote, once that stream was closed (a test's capture
    ending), '--- Logging error ---' tracebacks into whatever came next."""
    import io
    import logging
    import sys

    from edgefleet import logs

    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logs.configure("INFO")
    try:
        first.close()
        second = io.StringIO()
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("edgefleet.test").warning("after the stream changed")
        assert "after the stream changed" in second.getvalue()
        assert "Logging error" not in second.getvalue()
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logs._Handler)]:
            root.removeHandler(handler)
