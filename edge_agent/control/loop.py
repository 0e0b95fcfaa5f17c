"""The control loop: one thread that heartbeats to central, spools while it cannot, flushes on reconnect,
applies what central says to trust (trust_state) and renews the node's certificate. Inference never waits on
it: if central is down the agent serves on."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from edge_agent.config import FleetConfig
from edge_agent.control import policy, trust_state
from edge_agent.control.client import CentralRefused, ControlError, FleetClient, encode_event
from edge_agent.control.identity import FleetFiles
from edge_agent.control.spool import ReportSpool
from edge_agent.control.trust_state import OfferedTrust, TrustFiles
from edgefleet import pki
from edgefleet.backoff import backoff_delay

log = logging.getLogger(__name__)

FLUSH_BATCH = 500
RETRY_BASE_S = 1.0


class ControlLoop:
    def __init__(
        self,
        files: FleetFiles,
        config: FleetConfig,
        status_source: Callable[[], bytes],
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        central_addresses: Sequence[str] = (),
        on_trust_refused: Callable[[], None] = lambda: None,
    ):
        """`central_addresses`: the config's `central.addresses`, which override the ones from enrollment.
        `on_trust_refused` is called for each trust bundle refused (the agent's metric counts them)."""
        self.files = files
        self.config = config
        self._status_source = status_source
        self._clock = clock
        self._rand = rand
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgefleet-control", daemon=True)
        self.identity = files.load()
        self._meta_stamp = files.meta_stamp()  # fleet.json as last read: an edit is picked up at a reconnect
        self.trust_files = TrustFiles(files.root)
        self.trust = self.trust_files.load()
        self._on_trust_refused = on_trust_refused
        self.trust_updates_refused = 0
        self._renewed_for_bundle = ""  # the bundle (sha256) whose renew_now was answered: once per bundle
        self.spool = ReportSpool(files.spool, config.spool_max_reports, config.spool_retain_acknowledged_s, clock)
        self.interval_s = 15.0
        self.config_generation = 0
        self._failures = 0
        self._ever_connected = False
        self._refused = False
        self._last_error = ""
        self._last_ok_at: float | None = None
        self._offline_since: float | None = None
        self._central_addresses = tuple(central_addresses)
        self._client = self._new_client(start=None)
        self.activator = None
        self._state_lock = threading.Lock()  # the activation thread writes the state file too

    @property
    def client(self) -> FleetClient:
        """The current client (renewal replaces it), for downloads on other threads."""
        return self._client

    def attach_activator(self, activator) -> None:
        """From now on each heartbeat's desired model is handed to activator.want(), and each change of the
        activation's state is written to the state file at once."""
        self.activator = activator
        activator.on_state_change = self._write_state

    def start(self) -> None:
        self.spool.append("event", self._clock(), encode_event("agent_started", "the agent started"))
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        self._client.close()
        self.spool.close()

    # -- one beat ---------------------------------------------------------------

    def beat(self) -> float:
        """One heartbeat attempt and what follows it; returns the delay before the next."""
        now = self._clock()
        status = self._status_source()
        if not self._client.streaming:
            self._reread_addresses()
        try:
            reply = self._client.heartbeat(status)
        except ControlError as exc:
            return self._failed(exc, now, status)
        if self._failures and self._offline_since is not None:
            self.spool.append(
                "event",
                now,
                encode_event(
                    "central_reachable",
                    f"central reachable again after {now - self._offline_since:.0f} s",
                    spooled=str(len(self.spool)),
                ),
            )
        self._failures, self._refused, self._last_error = 0, False, ""
        self._ever_connected, self._last_ok_at, self._offline_since = True, now, None
        self.interval_s, self.config_generation = reply.interval_s, reply.config_generation
        if reply.fleet_addresses:
            self._adopt_fleet_addresses(reply.fleet_addresses)
        if reply.trust is not None:
            # Before the desired state: after a signing-key rotation its manifest is signed by the new key.
            self._apply_trust(reply.trust, now)
        if self.activator is not None:
            self.activator.want(reply.model, reply.manifest_body, reply.manifest_signature)
        try:
            if reply.first_on_stream:
                self._check_central_holds(now)
            self._flush()
            self._renew_if_due(now)
        except ControlError as exc:
            log.warning("%s", exc)
            self._last_error = str(exc)
        self._write_state()
        return policy.heartbeat_delay(self.interval_s, self._rand())

    def _failed(self, exc: ControlError, now: float, status: bytes) -> float:
        self._failures += 1
        self._refused = isinstance(exc, CentralRefused)
        self._last_error = str(exc)
        if self._offline_since is None:
            self._offline_since = now
        # Every failed beat's report is kept: its inference window is already taken, so skipping it would
        # lose those figures. The backoff bounds how many there are; the spool's bound does the rest.
        self.spool.append("status", now, status)
        (log.error if self._refused else log.warning)("%s (attempt %d; serving continues)", exc, self._failures)
        self._write_state()
        return backoff_delay(self._failures, RETRY_BASE_S, self.config.max_backoff_s, self._rand())

    def _flush(self) -> None:
        while True:
            batch = self.spool.peek(FLUSH_BATCH)
            dropped = self.spool.dropped_unreported()
            if not batch and not dropped:
                return
            acknowledged = self._client.report(batch, dropped, self.spool.epoch)
            if batch:
                self.spool.acknowledge(min(acknowledged, batch[-1].sequence) if acknowledged else batch[-1].sequence)
            self.spool.mark_dropped_reported(dropped)
            if len(batch) < FLUSH_BATCH:
                return

    def _apply_trust(self, offered: OfferedTrust, now: float) -> None:
        """Apply a trust bundle, or refuse it whole (counted, and reported to central as an event)."""
        try:
            update = self.trust_files.update(self.trust, offered, self.identity.certificate, now)
        except OSError as exc:
            log.warning("cannot write %s: %s; the bundle is applied at the next stream", self.trust_files.state, exc)
            return
        version = str(offered.version)
        if update.refused:
            self.trust_updates_refused += 1
            self._on_trust_refused()
            self.spool.append("event", now, encode_event("trust_update_refused", update.refused, version=version))
            return
        self.trust = update.trust
        if update.said:
            self.spool.append("event", now, encode_event("trust_updated", "; ".join(update.said), version=version))
        if update.ca_changed:
            # ca.crt changed: connect with the new roots from the next call on.
            self.identity = self.files.load()
            self._replace_client()

    def _check_central_holds(self, now: float) -> None:
        """On a new stream, ask central (an empty report) how far it holds this spool's reports: below what it
        acknowledged means it came back from a backup, and the reports it lost are sent again (spool.rewind)."""
        if not self.spool.acknowledged_through:
            return
        rewind = self.spool.rewind(self._client.report([], 0, self.spool.epoch))
        if rewind is None:
            return
        message = (
            f"central holds this node's reports through {rewind.central_holds}, below the "
            f"{rewind.acknowledged_through} it acknowledged (restored from a backup?): sending {rewind.resent} "
            f"again; {rewind.lost} no longer kept here, counted as dropped"
        )
        log.warning("%s", message)
        self.spool.append(
            "event",
            now,
            encode_event("reports_resent", message, resent=str(rewind.resent), lost=str(rewind.lost)),
        )

    def _adopt_fleet_addresses(self, sent: tuple[str, ...]) -> None:
        """Central's addresses from a heartbeat: kept in fleet.json when they differ from it, and dialled from
        the next connection on (the config's central.addresses still win)."""
        try:
            addresses = policy.check_fleet_addresses(sent)
        except ValueError as exc:
            log.warning("ignored the central addresses central sent: %s", exc)
            return
        if set(addresses) == set(self.identity.fleet_addresses):
            return  # each replica lists itself first: the same replicas in another order are no change
        try:
            self.files.save_fleet_addresses(addresses)
        except (OSError, ValueError) as exc:
            log.warning("cannot keep central's new addresses in %s: %s", self.files.meta, exc)
        self._meta_stamp = self.files.meta_stamp()
        log.info("central's addresses are now %s (were %s)", ", ".join(addresses), ", ".join(self._client.addresses))
        self._use_addresses(addresses[0], addresses)

    def _reread_addresses(self) -> None:
        """Before a (re)connect: when fleet.json changed on disk (`edge-agent central-addresses set`), dial the
        addresses it holds now."""
        stamp = self.files.meta_stamp()
        if stamp is None or stamp == self._meta_stamp:
            return
        self._meta_stamp = stamp
        try:
            central, enrolled = self.files.load_addresses()
            addresses = policy.central_addresses((), enrolled, central)
        except (OSError, ValueError, KeyError) as exc:
            log.warning(
                "cannot read central's addresses from %s: %s; dialling %s",
                self.files.meta,
                exc,
                ", ".join(self._client.addresses),
            )
            return
        if (central, enrolled) == (self.identity.central, self.identity.fleet_addresses):
            return
        log.info("%s changed: central's addresses are now %s", self.files.meta, ", ".join(addresses))
        self._use_addresses(central, enrolled)

    def _use_addresses(self, central: str, enrolled: tuple[str, ...]) -> None:
        self.identity = replace(self.identity, central=central, fleet_addresses=enrolled)
        if self._central_addresses:
            log.info("the config's central.addresses (%s) still win", ", ".join(self._central_addresses))
            return
        self._client.set_addresses(policy.central_addresses((), enrolled, central), self._rand())

    def _renew_if_due(self, now: float) -> None:
        cert = self.identity.certificate
        due = pki.renewal_due(cert.not_valid_before_utc, cert.not_valid_after_utc, pki.utc(now))
        asked = trust_state.renewal_wanted(self.trust, cert) and self._renewed_for_bundle != self.trust.bundle_sha256
        if not due and not asked:
            return
        key = pki.generate_key()
        certificate_pem = self._client.renew_certificate(key)
        if asked:
            # Answered: not asked again for this bundle even if central issued from another CA (a replica
            # whose data dir lags), which would otherwise have the node renew at every beat.
            self._renewed_for_bundle = self.trust.bundle_sha256
        new_cert = pki.load_certificate(certificate_pem)
        problem = trust_state.renewal_problem(self.trust, new_cert, key, self.identity.node_id, now)
        if problem is not None:
            # Central's word alone does not make a CA trusted, nor a certificate usable; the current one serves on.
            raise ControlError(
                f"certificate renewal: central's answer is refused: {problem}; keeping the current certificate"
            )
        self.files.save_certificate(pki.private_key_pem(key), certificate_pem)
        self.identity = self.files.load()
        self._replace_client()
        log.info(
            "renewed the node certificate%s: serial %s from %s, valid until %s",
            "" if due else " (central asked for one from its newest CA)",
            pki.serial_hex(new_cert),
            new_cert.issuer.rfc4514_string(),
            new_cert.not_valid_after_utc.isoformat(),
        )
        self.spool.append(
            "event",
            now,
            encode_event("certificate_renewed", "renewed the node certificate", serial=pki.serial_hex(new_cert)),
        )

    def _replace_client(self) -> None:
        """A client for the identity now (a new certificate, or new CA roots), at the same address."""
        old, self._client = self._client, self._new_client(start=self._client.index)
        old.close()

    def _new_client(self, start: int | None) -> FleetClient:
        """A client for the current identity, starting at address `start` (None: a random one)."""
        addresses = policy.central_addresses(
            self._central_addresses, self.identity.fleet_addresses, self.identity.central
        )
        if start is None:
            start = policy.first_address(len(addresses), self._rand())
        return FleetClient(self.identity, self.config.rpc_timeout_s, addresses, start)

    # -- loop and state ------------------------------------------------------------

    def _run(self) -> None:
        delay = 0.0
        while not self._stop.wait(delay):
            try:
                delay = self.beat()
            except Exception:  # the loop must outlive any bug in one beat; serving never depends on it
                log.exception("control loop: unexpected error; retrying")
                delay = backoff_delay(max(self._failures, 1), RETRY_BASE_S, self.config.max_backoff_s, self._rand())

    @property
    def state(self) -> str:
        return policy.control_state(self._ever_connected, self._failures, self._refused)

    def _write_state(self) -> None:
        cert = self.identity.certificate
        try:
            with self._state_lock:
                self.files.write_state(
                    {
                        "state": self.state,
                        "node_id": self.identity.node_id,
                        "central": self._client.address,
                        "central_addresses": list(self._client.addresses),
                        "last_heartbeat_at": self._last_ok_at,
                        "consecutive_failures": self._failures,
                        "last_error": self._last_error,
                        "heartbeat_interval_s": self.interval_s,
                        "spooled_reports": len(self.spool),
                        "dropped_unreported": self.spool.dropped_unreported(),
                        "acknowledged_reports_kept": self.spool.kept_acknowledged,
                        "certificate_serial": pki.serial_hex(cert),
                        "certificate_expires_at": cert.not_valid_after_utc.timestamp(),
                        "config_generation": self.config_generation,
                        "activation": _activation_dict(self.activator),
                        "trust_version": self.trust.version,
                        "trust_updates_refused": self.trust_updates_refused,
                    }
                )
        except OSError as exc:
            log.warning("cannot write %s: %s", self.files.state, exc)


def _activation_dict(activator) -> dict | None:
    status = activator.status if activator else None
    if status is None or status.model is None:
        return None
    return {
        "model": f"{status.model.name}@{status.model.version}",
        "state": status.state,
        "bytes_done": status.bytes_done,
        "bytes_total": status.bytes_total,
        "reason": status.reason,
    }
