"""`edgefleet dashboard` in Debian's Chromium (driven by Playwright, with /usr/bin/chromium: no browser download).

A real central (0.5 s heartbeats), three real agents (SmolLM2) labelled region=eu, us and ap with some traffic, an
objective, and `edgefleet dashboard` as a real process holding a VIEWER's credential (it only reads). Every page
loads with no console error and no page error (a Content-Security-Policy violation is a console error) and no part
"not available" (central implements every RPC it calls), shows the three nodes and their live figures, and the
node list's requests in the last hour grow after new heartbeats without a reload (htmx). A
screenshot of each page is saved under the test's tmp dir, and copied to $EDGEFLEET_SCREENSHOT_DIR when set.
With JavaScript off the tables are there.

The fleet also carries what the rollouts and federated pages show, as tests/fleet_activity.py makes it for the
Prometheus test too: the built-in model's file pushed as chat@1.0.0 and chat@2.0.0, eu's node on 1.0.0 and 2.0.0
rolled out to region=eu, and a one-round federated usage-stats run over the three nodes (both started with the
fleet, so they go on while the first tests run). The rollouts page shows the rollout completed with its step's
progress, the federated page the run completed, and the eu node's page its activation of chat@2.0.0 (the same bytes
as 1.0.0, under the version central assigned) and its certificate's expiry.

Without Chromium or Playwright these skip, except under CI=true, where a skip would hide the failure.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import fleet_activity
from agent_process import start_agent
from central_process import CentralProcess, create_token, edgefleet_cli, start_central, wait_for
from edge_agent.control.client import enroll
from edge_agent.control.identity import FleetFiles
from edge_agent.models import resolve_model
from edgefleet import pki

CHROMIUM = os.environ.get("EDGEFLEET_CHROMIUM", "/usr/bin/chromium")
REGIONS = ("eu", "us", "ap")
PAGES = ("/", "/nodes", "/rollouts", "/federated", "/residency", "/objectives", "/burst", "/audit")
FAST_RETRY = {"max_backoff_s": 1.0, "rpc_timeout_s": 3.0}
START_TIMEOUT_S = 60
# Federated learning needs flwr 1.42, which needs Python 3.11: on 3.10 the fleet runs no SuperLink and no run.
FEDERATED = sys.version_info >= (3, 11)


def _skip_or_fail(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the browser tests must run; `make system-packages` installs Chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() and os.access(CHROMIUM, os.X_OK)):
        _skip_or_fail(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail("Playwright for Python is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _complete(base_url: str, prompt: str) -> None:
    r = httpx.post(
        base_url + "/v1/completions",
        timeout=120,
        headers={"Cache-Control": "no-store"},
        json={"model": "smollm2-135m-instruct", "prompt": prompt, "max_tokens": 4, "temperature": 0.7},
    )
    assert r.status_code == 200, r.text


@dataclass
class Fleet:
    central: CentralProcess
    nodes: dict  # region -> (node id, AgentProcess)
    certificates: dict  # region -> the node's certificate, as enrollment gave it
    rollout_id: str
    run_id: str | None  # None without federated learning (Python 3.10)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    superlink = ("--superlink-listen", "127.0.0.1:0") if FEDERATED else ()
    central = start_central(root / "central", "--heartbeat-interval", "0.5s", *superlink)
    agents, nodes, certificates = [], {}, {}
    try:
        for index, region in enumerate(REGIONS):
            token = create_token(central, region=region)
            data_dir = root / f"agent-{region}"
            identity = enroll(central.enroll_address, token.ca_fingerprint, token.token, FleetFiles(data_dir))
            sections: dict = {"fleet": FAST_RETRY}
            if FEDERATED:
                fleet_activity.write_usage(data_dir, index)
                sections["federated"] = {"enabled": True}
            agent = start_agent(data_dir, sections=sections)
            agents.append(agent)
            nodes[region] = (identity.node_id, agent)
            certificates[region] = identity.certificate
        for i, (_, agent) in enumerate(nodes.values()):
            _complete(agent.base_url, f"Say hello {i}:")
        edgefleet_cli(central, "slo", "set", "eu-latency", "--selector", "region=eu", "--p99-ms", "5000")
        # The cheapest rollout: the built-in model's own file pushed as chat@1.0.0 and chat@2.0.0. eu's node gets
        # 1.0.0 (a rollout needs a version to roll back to), fetched from central into a slot and switched to; the
        # rollout of 2.0.0 then switches it to the same bytes under the new version, from that slot. Neither is
        # waited for here: they go on, with the federated run, while the first tests look at the pages. (eu's model
        # id becomes "chat": no test sends eu a request after this.)
        smol = resolve_model("smollm2-135m-instruct", "", root / "models")
        for version in ("1.0.0", "2.0.0"):
            fleet_activity.push(central, smol.path, "chat", version)
        fleet_activity.assign(central, nodes["eu"][0], "chat@1.0.0")
        rollout = fleet_activity.start_rollout(central, "chat@2.0.0", "region=eu")
        # The run waits (fl start --wait-nodes, 2 min) for the SuperNodes to connect.
        run_id = str(fleet_activity.start_usage_stats_run(central, len(REGIONS))["run"]) if FEDERATED else None
        yield Fleet(central, nodes, certificates, rollout["rollout"], run_id)
    finally:
        for agent in agents:
            agent.stop()
        central.stop()


@pytest.fixture(scope="module")
def dashboard(fleet, tmp_path_factory):
    """`edgefleet dashboard` as its own process, with a viewer's credential; its base URL."""
    central = fleet.central
    viewer = tmp_path_factory.mktemp("viewer") / "viewer.credential"
    edgefleet_cli(central, "admin", "create", "dash-viewer", "--role", "viewer", "--out", str(viewer))
    log = tmp_path_factory.mktemp("dashboard") / "dashboard.log"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "central.cli", "dashboard", "--listen", "127.0.0.1:0"),
            *("--credential", str(viewer), "--central", central.fleet_address),
        ],
        stdout=subprocess.PIPE,
        stderr=open(log, "wb"),  # noqa: SIM115 - the child holds it
        text=True,
    )
    try:
        url = _read_url(proc, log)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    assert "Traceback" not in log.read_text(errors="replace"), log.read_text(errors="replace")


def _read_url(proc: subprocess.Popen, log: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            match = re.search(r"(http://\S+?)/ ", line)
            if match:
                return match.group(1)
        if proc.poll() is not None:
            raise AssertionError(f"edgefleet dashboard exited {proc.returncode}: {log.read_text()}")
    raise AssertionError(f"edgefleet dashboard printed no URL within {START_TIMEOUT_S} s: {log.read_text()}")


def _shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    target = os.environ.get("EDGEFLEET_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
    return path


def _watched_page(browser, **context_args):
    """A page whose console errors and uncaught exceptions are collected in page.problems."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, **context_args)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.problems = problems
    return page


def _wait_for_history(central, node_ids) -> None:
    """Until every node's minute has a rollup with requests (the heartbeats carried the traffic)."""
    from edgefleet.v1 import admin_pb2

    def ready():
        with central.admin() as admin:
            reply = admin.call(
                "GetMetricsHistory", admin_pb2.GetMetricsHistoryRequest(scopes=[f"node:{n}" for n in node_ids])
            )
        return all(sum(p.requests for p in s.points) > 0 for s in reply.series)

    wait_for(ready, timeout_s=60, what="each node's traffic in the history")


def test_every_page_loads_clean_and_shows_the_three_nodes(browser, fleet, dashboard, tmp_path):
    central, nodes = fleet.central, fleet.nodes
    ids = {region: node_id for region, (node_id, _) in nodes.items()}
    _wait_for_history(central, ids.values())
    page = _watched_page(browser)
    for path in [*PAGES, f"/nodes/{ids['eu']}"]:
        page.goto(dashboard + path, wait_until="load")
        page.wait_for_function("() => window.htmx !== undefined")
        html = page.content()
        assert "not available" not in html, f"{path}: central answers every RPC the dashboard calls"
        if path == "/":
            assert page.inner_text("#nodes-total") == "3"
            wait_for(lambda: page.inner_text("#nodes-online") == "3", timeout_s=30, what="three nodes online")
            assert page.inner_text("#restricted-left") == "0"
            regions = page.inner_text("#regions")
            assert all(region in regions for region in REGIONS)
        if path == "/nodes":
            for region, node_id in ids.items():
                row = page.locator(f"#node-{node_id}")
                assert f"region={region}" in row.inner_text()
                assert "online" in row.inner_text()
                assert row.locator(".tokens-per-s").inner_text() != "-", "live figures from the last heartbeat"
        if path == "/objectives":
            assert "eu-latency" in page.inner_text("#objectives") and "region=eu" in html
        if path == "/residency":
            assert page.inner_text("#restricted-left") == "0"
            assert all(node_id in html for node_id in ids.values())
        if path.startswith("/nodes/"):
            assert ids["eu"] in page.inner_text("#node-identity") and "region=eu" in html
            assert page.inner_text("#node-live .requests-1h") != "-"
            page.wait_for_function("() => document.querySelectorAll('.chart canvas').length === 2")  # uPlot drew
        # One htmx refresh of the live part, so its requests are among what is checked.
        page.evaluate("() => new Promise(r => document.body.addEventListener('htmx:afterSwap', r, {once: true}))")
        _shot(page, tmp_path, path.strip("/").replace("/", "-") or "overview")
        assert page.problems == [], f"{path}: {page.problems}"


def test_the_node_list_updates_after_a_heartbeat_without_a_reload(browser, fleet, dashboard, tmp_path):
    nodes = fleet.nodes
    node_id, agent = nodes["us"]
    page = _watched_page(browser)
    page.goto(dashboard + "/nodes", wait_until="load")
    page.wait_for_function("() => window.htmx !== undefined")
    page.evaluate("() => { window.sameDocument = true; }")
    cell = f"#node-{node_id} .requests-1h"  # requests in the last hour, from central's history of the heartbeats
    before = page.inner_text(cell)
    assert before.isdigit(), before
    for i in range(3):
        _complete(agent.base_url, f"Count to {i}:")
    page.wait_for_function(
        "([sel, before]) => parseInt(document.querySelector(sel).textContent) >= parseInt(before) + 3",
        arg=[cell, before],
        timeout=60_000,
    )
    assert page.evaluate("() => window.sameDocument") is True, "the page was reloaded"
    assert page.problems == [], page.problems
    _shot(page, tmp_path, "nodes-updated")


def test_without_javascript_the_tables_are_there(browser, fleet, dashboard, tmp_path):
    nodes = fleet.nodes
    page = _watched_page(browser, java_script_enabled=False)
    page.goto(dashboard + "/nodes", wait_until="load")
    table = page.inner_text("#node-table")
    for region, (node_id, _) in nodes.items():
        assert node_id in table and f"region={region}" in table
    page.goto(dashboard + "/", wait_until="load")
    assert page.inner_text("#nodes-total") == "3"
    _shot(page, tmp_path, "nodes-no-javascript")
    assert page.problems == [], page.problems


def test_a_rebound_host_name_is_refused(fleet, dashboard):
    port = dashboard.rsplit(":", 1)[1]
    refused = httpx.get(dashboard + "/nodes", headers={"Host": f"attacker.example:{port}"})
    assert refused.status_code == 421
    assert httpx.get(dashboard + "/nodes").headers["x-frame-options"] == "DENY"


def test_the_rollout_the_run_and_a_node_s_activation_are_shown(browser, fleet, dashboard, tmp_path):
    central, (eu, _) = fleet.central, fleet.nodes["eu"]
    done = fleet_activity.rollout_ended(central, fleet.rollout_id)
    assert done["phase"] == "COMPLETED", done
    # Central judges a rollout by the bytes; the box must also say it serves them as chat@2.0.0, as assigned.
    fleet_activity.wait_active(central, eu, "chat@2.0.0", timeout_s=60)
    page = _watched_page(browser)

    page.goto(dashboard + "/rollouts", wait_until="load")
    rollout = page.locator(f"#rollout-{fleet.rollout_id}")
    assert "chat@2.0.0" in rollout.locator("h2").inner_text() and "COMPLETED" in rollout.locator("h2").inner_text()
    assert "region=eu" in rollout.inner_text()
    steps = rollout.locator("table.steps tbody tr")
    assert steps.count() == 1, "--canary 100: one step"
    cells = [c.strip() for c in steps.nth(0).locator("td").all_inner_texts()]
    # step, percent, nodes, on chat@2.0.0, (the progress bar), state
    assert (cells[0], cells[1], cells[2], cells[3], cells[5]) == ("1 (canary)", "100%", "1", "1", "done"), cells
    bar = steps.nth(0).locator("progress")
    assert (bar.get_attribute("value"), bar.get_attribute("max")) == ("1", "1")
    node_rows = rollout.locator("details table tbody tr")
    assert node_rows.count() == 1
    node = [c.strip() for c in node_rows.nth(0).locator("td").all_text_contents()]  # in a closed <details>
    assert node == [eu, "2.0.0", "2.0.0", "ACTIVE", "yes"], "node, desired, serving, activation, in step"
    _shot(page, tmp_path, "rollouts-content")

    if fleet.run_id is not None:
        finished = fleet_activity.run_ended(central, fleet.run_id)
        assert finished["status"] == "completed", finished
        page.goto(dashboard + "/federated", wait_until="load")
        row = page.locator("#runs tbody tr", has=page.locator(f"td:first-child:text-is('{fleet.run_id}')"))
        cells = [c.strip() for c in row.locator("td").all_inner_texts()]
        # run, task, status, rounds, round time, nodes
        assert cells[:4] == [fleet.run_id, "usage-stats", "completed", "1/1"], cells
        assert cells[4].endswith(" s") and cells[5] == str(len(REGIONS)), cells
        _shot(page, tmp_path, "federated-content")

    page.goto(dashboard + f"/nodes/{eu}", wait_until="load")
    activation = page.inner_text("#activation")
    # Its bytes were all on the box already (slot a, from 1.0.0): none left to fetch.
    assert re.fullmatch(r"chat@2\.0\.0: ACTIVE \((\S+ MiB) of \1\) since 20\S+ \S+Z", activation), activation
    assert "chat@2.0.0" in page.inner_text("#node-model"), "serving: the name and version central assigned"
    assert page.inner_text("#model-slot") in ("a", "b"), "the A/B slot the fleet model was activated into"
    certificate = fleet.certificates["eu"]
    expiry = page.inner_text("#cert-expiry")
    expires = certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%SZ")
    assert f"{pki.serial_hex(certificate)}, expires {expires}" in expiry, expiry
    assert re.search(r"\(\d+ d left\)$", expiry), expiry
    page.goto(dashboard + f"/nodes/{fleet.nodes['us'][0]}", wait_until="load")
    assert page.inner_text("#activation") == "nothing assigned or attempted"
    assert page.inner_text("#model-slot") == "none: not a fleet model", "the built-in model lies in no slot"
    assert page.problems == [], page.problems
