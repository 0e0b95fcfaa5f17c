"""Central's decisions: enrollment, node identity checks, heartbeats, operator actions, audit.

Every method takes the caller (its certificate's identity and address) and
plain values, and raises a :mod:`central.errors` error that the servicers map
to a gRPC status. Refusals and operator actions are written to the audit log
here, so no servicer can forget one.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

from central import audit, federation, liveness, routing, tokens
from central.datadir import Authority
from central.heartbeats import HeartbeatBuffer
from central.rollouts import Rollouts
from central.blobs import BlobStore
from central.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from central.labels import LabelError, validate_labels
from central.store import (DesiredState, FederatedRunRecord, FleetStore, ModelRecord, NodeRecord, NodeRoutingRecord,
                           ReportRecord, TokenRecord)
from edgefleet import manifest as manifest_mod
from edgefleet import pki

log = logging.getLogger(__name__)

MAX_TOKEN_TTL_S = 30 * 86400
MAX_TOKEN_USES = 100_000
MAX_REPORTS_PER_CALL = 1000
DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class CentralSettings:
    heartbeat_interval_s: float = 15.0
    certificate_lifetime_s: float = 30 * 86400
    token_default_ttl_s: float = 3600.0
    # What `token create` tells agents to dial, and the fleet port sent back at enrollment.
    enroll_address: str = "127.0.0.1:7444"
    fleet_port: int = 7443
    # The SuperLink's port sent back at enrollment; 0 when central runs no SuperLink.
    superlink_port: int = 0


@dataclass(frozen=True)
class Caller:
    identity: pki.Identity | None
    peer: str

    @property
    def actor(self) -> str:
        return str(self.identity) if self.identity else "anonymous"


@dataclass(frozen=True)
class Enrollment:
    node_id: str
    labels: dict[str, str]
    certificate_pem: str


@dataclass(frozen=True)
class NodeView:
    record: NodeRecord
    state: str


class Coordinator:
    def __init__(self, store: FleetStore, authority: Authority, settings: CentralSettings,
                 signing_public_key_pem: str, clock: Callable[[], float] = time.time, *,
                 blobs: BlobStore | None = None, signing_key=None):
        self.store = store
        self.blobs = blobs
        self.signing_key = signing_key
        self.authority = authority
        self.settings = settings
        self.signing_public_key_pem = signing_public_key_pem
        self._clock = clock
        self.beats = HeartbeatBuffer(store)
        self.rollouts = Rollouts(self)
        # Set by `central serve` when it runs a SuperLink (central.federation).
        self.federation: federation.Federation | None = None
        self._import_lock = threading.Lock()

    # -- audit ---------------------------------------------------------------

    def _audit(self, caller: Caller, action: str, target: str, outcome: str, detail: str) -> None:
        self.store.append_audit(self._clock(), caller.actor, action, target, outcome, detail, caller.peer)

    def _refuse(self, error_type, caller: Caller, action: str, target: str, detail: str):
        self._audit(caller, action, target, audit.REFUSED, detail)
        log.warning("refused %s by %s from %s: %s", action, caller.actor, caller.peer, detail)
        return error_type(detail)

    # -- enrollment ----------------------------------------------------------

    def enroll(self, caller: Caller, token_text: str, csr_pem: str, hostname: str,
               flower_public_key: str = "") -> Enrollment:
        action = "node.enroll"
        parsed = tokens.parse_token(token_text)
        if parsed is None:
            raise self._refuse(Unauthenticated, caller, action, "", "the bootstrap token is malformed (expected ID.SECRET)")
        token_id, secret = parsed
        caller = replace(caller, identity=None)
        token_caller = _TokenCaller(token_id, caller.peer)
        now = self._clock()
        refusal = tokens.token_refusal(self.store.get_token(token_id), secret, now)
        if refusal:
            raise self._refuse(Unauthenticated, token_caller, action, token_id, refusal)
        try:
            public_key = pki.public_key_from_csr(csr_pem)
            if flower_public_key:
                federation.validate_flower_key(flower_public_key)
        except (pki.PkiError, InvalidArgument) as exc:
            raise self._refuse(InvalidArgument, token_caller, action, token_id, str(exc)) from None
        record = self.store.get_token(token_id)
        node_id = "node-" + secrets.token_hex(4)
        cert = self.authority.issue(public_key, pki.Identity("node", node_id),
                                    dt.timedelta(seconds=self.settings.certificate_lifetime_s), pki.utc(now))
        node = NodeRecord(node_id=node_id, labels=dict(record.labels), hostname=hostname[:253], enrolled_at=now,
                          token_id=token_id, certificate_serial=pki.serial_hex(cert),
                          certificate_expires_at=cert.not_valid_after_utc.timestamp())
        if not self.store.enroll(token_id, node, now):
            # Lost a race for the token's last use, or it was revoked meanwhile.
            raise self._refuse(Unauthenticated, token_caller, action, token_id,
                               tokens.token_refusal(self.store.get_token(token_id), secret, now) or "token unusable")
        if flower_public_key:
            # Registered with the SuperLink by the next reconcile pass (reconcile_federation).
            self.store.set_flower_key(node_id, flower_public_key.strip())
        self._audit(token_caller, action, node_id, audit.ALLOWED, f"enrolled {node_id} ({hostname or 'no hostname'})")
        return Enrollment(node_id, node.labels, pki.certificate_pem(cert).decode())

    # -- nodes' own calls ----------------------------------------------------

    def _node_caller(self, caller: Caller, claimed_node_id: str, action: str) -> str:
        identity = caller.identity
        if identity is None:
            raise self._refuse(Unauthenticated, caller, action, claimed_node_id, "no fleet identity in the client certificate")
        if identity.role != "node":
            raise self._refuse(PermissionDenied, caller, action, claimed_node_id,
                               f"{identity} is not a node certificate; FleetService is for enrolled nodes")
        if claimed_node_id != identity.name:
            raise self._refuse(PermissionDenied, caller, action, claimed_node_id,
                               f"certificate of {identity.name} cannot speak as {claimed_node_id or 'no node'}")
        return identity.name

    def _refuse_unknown_or_revoked(self, caller: Caller, node_id: str, action: str):
        node = self.store.get_node(node_id)
        if node is None:
            return self._refuse(PermissionDenied, caller, action, node_id, f"node {node_id} is not enrolled")
        return self._refuse(PermissionDenied, caller, action, node_id, f"node {node_id} was revoked")

    def _active_node(self, caller: Caller, claimed_node_id: str, action: str) -> NodeRecord:
        node_id = self._node_caller(caller, claimed_node_id, action)
        node = self.store.get_node(node_id)
        if node is None or node.revoked_at is not None:
            raise self._refuse_unknown_or_revoked(caller, node_id, action)
        return node

    def heartbeat(self, caller: Caller, claimed_node_id: str, status: bytes, certificate_expires_at: float,
                  routing_report: routing.RoutingReport | None = None) -> DesiredState:
        """One message of a node's heartbeat stream. The stream outlives the TLS handshake that checked the
        certificate, so its expiry, the node id and revocation are checked again on every message.
        `routing_report` is what the status says of routing, added to the node's totals."""
        action = "fleet.heartbeat"
        node_id = self._node_caller(caller, claimed_node_id, action)
        now = self._clock()
        if now >= certificate_expires_at:
            raise self._refuse(Unauthenticated, caller, action, node_id,
                               "the client certificate expired during the stream; renew it or enroll again")
        desired = self.store.heartbeat_target(node_id)
        if desired is None:
            raise self._refuse_unknown_or_revoked(caller, node_id, action)
        self.beats.record(node_id, now, status, _usable(node_id, routing_report))
        return desired

    def flush_heartbeats(self) -> None:
        self.beats.flush()

    def renew_certificate(self, caller: Caller, claimed_node_id: str, csr_pem: str) -> str:
        action = "fleet.renew_certificate"
        node = self._active_node(caller, claimed_node_id, action)
        try:
            public_key = pki.public_key_from_csr(csr_pem)
        except pki.PkiError as exc:
            raise self._refuse(InvalidArgument, caller, action, node.node_id, str(exc)) from None
        cert = self.authority.issue(public_key, pki.Identity("node", node.node_id),
                                    dt.timedelta(seconds=self.settings.certificate_lifetime_s), pki.utc(self._clock()))
        self.store.set_certificate(node.node_id, pki.serial_hex(cert), cert.not_valid_after_utc.timestamp())
        self._audit(caller, action, node.node_id, audit.ALLOWED, f"issued certificate {pki.serial_hex(cert)}")
        return pki.certificate_pem(cert).decode()

    def report(self, caller: Caller, claimed_node_id: str, reports: list[ReportRecord], dropped_count: int,
               routing_reports: dict[int, routing.RoutingReport] | None = None) -> int:
        """Spooled reports; `routing_reports` (by report sequence) are what their statuses say of routing."""
        node = self._active_node(caller, claimed_node_id, "fleet.report_event")
        if len(reports) > MAX_REPORTS_PER_CALL:
            raise InvalidArgument(f"at most {MAX_REPORTS_PER_CALL} reports per call, got {len(reports)}")
        if any(r.sequence <= 0 for r in reports):
            raise InvalidArgument("report sequences start at 1")
        usable = {seq: r for seq, r in (routing_reports or {}).items() if _usable(node.node_id, r) is not None}
        return self.store.add_reports(node.node_id, reports, dropped_count, routing=usable or None)

    def fetch_artifact(self, caller: Caller, sha256: str, offset: int) -> int:
        """The size of a registered artifact the node may download from offset; raises otherwise."""
        action = "fleet.fetch_artifact"
        node = self._active_node(caller, caller.identity.name if caller.identity else "", action)
        if not self.store.models_with_sha256(sha256):
            raise NotFound(f"no registered model has sha256 {sha256!r}")
        size = self.blobs.size(sha256)
        if size is None:
            raise self._refuse(NotFound, caller, action, node.node_id, f"the blob {sha256} is missing from the store")
        if offset > size:
            raise InvalidArgument(f"offset {offset} is past the artifact's end ({size} bytes)")
        return size

    # -- model registry --------------------------------------------------------------

    def check_push(self, caller: Caller, name: str, version: str, fmt: str, params: dict[str, str], size: int,
                   sha256: str) -> None:
        """Validate a push's header before any bytes are stored."""
        self._admin(caller, "model.push", f"{name}@{version}")
        try:
            manifest_mod.validate_name_version(name, version)
        except manifest_mod.ManifestError as exc:
            raise InvalidArgument(str(exc)) from None
        if fmt not in manifest_mod.FORMATS:
            raise InvalidArgument(f"format must be one of {', '.join(manifest_mod.FORMATS)}, got {fmt!r}")
        if size <= 0 or len(sha256) != 64:
            raise InvalidArgument("the upload header must give the file's size (more than 0 bytes) and sha256")
        validate_params(params)

    def refuse_push(self, caller: Caller, name: str, version: str, detail: str) -> InvalidArgument:
        return self._refuse(InvalidArgument, caller, "model.push", f"{name}@{version}", detail + "; nothing stored")

    def drop_unregistered_blob(self, sha256: str) -> None:
        self._drop_blob_if_unused(sha256)

    def finish_push(self, caller: Caller, name: str, version: str, fmt: str, params: dict[str, str],
                    sha256: str, size: int) -> tuple[ModelRecord, bool]:
        """Register the stored blob as name@version; (record, already_present)."""
        existing = self.store.get_model(name, version)
        if existing is not None:
            if existing.sha256 == sha256:
                return existing, True
            self._drop_blob_if_unused(sha256)
            raise self._refuse(AlreadyExists, caller, "model.push", f"{name}@{version}",
                               f"{name}@{version} already exists with other bytes (sha256 {existing.sha256[:12]}…);"
                               " versions are immutable: push a new version")
        manifest = manifest_mod.Manifest(name, version, fmt, sha256, size, dict(params), self._clock(), caller.actor)
        body, signature = manifest_mod.sign(manifest, self.signing_key)
        record = ModelRecord(name, version, fmt, sha256, size, dict(params), manifest.created_at, caller.actor,
                             body, signature)
        self.store.add_model(record)
        self._audit(caller, "model.push", f"{name}@{version}", audit.ALLOWED, f"sha256 {sha256}, {size} bytes")
        return record, False

    def list_models(self, caller: Caller, name: str) -> list[ModelRecord]:
        self._admin(caller, "model.list")
        return self.store.list_models(name)

    def get_model(self, caller: Caller, name: str, version: str) -> tuple[ModelRecord, list[str]]:
        self._admin(caller, "model.get", f"{name}@{version}")
        model = self._model(name, version)
        return model, self._assigned_to(model)

    def delete_model(self, caller: Caller, name: str, version: str) -> bool:
        target = f"{name}@{version}"
        self._admin(caller, "model.delete", target)
        model = self._model(name, version)
        assigned = self.store.delete_model(name, version)
        if assigned:
            raise self._refuse(FailedPrecondition, caller, "model.delete", target,
                               f"{target} is assigned to {len(assigned)} node(s) ({', '.join(assigned[:5])}); "
                               "assign them another version first")
        removed = self._drop_blob_if_unused(model.sha256)
        self._audit(caller, "model.delete", target, audit.ALLOWED, "deleted" + (" with its blob" if removed else ""))
        return removed

    def assign_model(self, caller: Caller, node_id: str, name: str, version: str) -> NodeView:
        target = f"{name}@{version}"
        self._admin(caller, "node.assign", node_id)
        model = self._model(name, version)
        node = self.store.assign_model(node_id, model)
        if node is None:
            raise NotFound(f"no node {node_id!r}")
        self._audit(caller, "node.assign", node_id, audit.ALLOWED, f"assigned {target}")
        return self.view(node)

    def _model(self, name: str, version: str) -> ModelRecord:
        model = self.store.get_model(name, version)
        if model is None:
            raise NotFound(f"no model {name}@{version}")
        return model

    def _assigned_to(self, model: ModelRecord) -> list[str]:
        return [n for n in self.store.nodes_assigned(model.sha256)
                if self.store.get_node(n).desired_model.get("version") == model.version]

    def _drop_blob_if_unused(self, sha256: str) -> bool:
        if self.store.models_with_sha256(sha256):
            return False
        self.blobs.delete(sha256)
        return True

    # -- operators -----------------------------------------------------------

    def _admin(self, caller: Caller, action: str, target: str = "") -> None:
        if caller.identity is None:
            raise self._refuse(Unauthenticated, caller, action, target, "no fleet identity in the client certificate")
        if caller.identity.role != "admin":
            raise self._refuse(PermissionDenied, caller, action, target,
                               f"{caller.identity} is not an admin certificate; AdminService needs one")

    def create_token(self, caller: Caller, labels: dict[str, str], ttl_s: float, uses: int) -> tuple[str, TokenRecord]:
        self._admin(caller, "token.create")
        try:
            labels = validate_labels(labels)
        except LabelError as exc:
            raise InvalidArgument(str(exc)) from None
        ttl_s = ttl_s or self.settings.token_default_ttl_s
        if not 0 < ttl_s <= MAX_TOKEN_TTL_S:
            raise InvalidArgument(f"ttl must be between 1 s and {MAX_TOKEN_TTL_S // 86400} days")
        uses = uses or 1
        if not 0 < uses <= MAX_TOKEN_USES:
            raise InvalidArgument(f"uses must be between 1 and {MAX_TOKEN_USES}")
        token_id, secret = tokens.new_token()
        now = self._clock()
        record = TokenRecord(token_id, tokens.hash_secret(secret), labels, now, now + ttl_s, uses, uses, False,
                             caller.actor)
        self.store.add_token(record)
        self._audit(caller, "token.create", token_id, audit.ALLOWED,
                    f"{uses} use(s), expires in {ttl_s:.0f} s, labels {labels}")
        return f"{token_id}.{secret}", record

    def list_tokens(self, caller: Caller) -> list[TokenRecord]:
        self._admin(caller, "token.list")
        return self.store.list_tokens()

    def revoke_token(self, caller: Caller, token_id: str) -> TokenRecord:
        self._admin(caller, "token.revoke", token_id)
        record = self.store.revoke_token(token_id)
        if record is None:
            raise NotFound(f"no bootstrap token {token_id!r}")
        self._audit(caller, "token.revoke", token_id, audit.ALLOWED, "revoked")
        return record

    def view(self, node: NodeRecord) -> NodeView:
        return NodeView(node, liveness.node_state(node, self.settings.heartbeat_interval_s, self._clock()))

    def list_nodes(self, caller: Caller, selector: dict[str, str], page_size: int = 0,
                   page_token: str = "") -> tuple[list[NodeView], str]:
        """One page of nodes and the token of the next page ("" on the last): a page of 1000 nodes with their
        status is about 350 KB, far inside gRPC's message limit, and builds in milliseconds on the loop."""
        self._admin(caller, "node.list")
        if page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be at most {MAX_PAGE_SIZE}, got {page_size}")
        page_size = page_size or DEFAULT_PAGE_SIZE
        self.beats.flush()
        nodes = self.store.list_nodes(selector, page_token, page_size + 1)
        more = len(nodes) > page_size
        nodes = nodes[:page_size]
        return [self.view(n) for n in nodes], nodes[-1].node_id if more else ""

    def get_node(self, caller: Caller, node_id: str, report_limit: int) -> tuple[NodeView, list[ReportRecord]]:
        self._admin(caller, "node.get", node_id)
        self.beats.flush()
        node = self.store.get_node(node_id)
        if node is None:
            raise NotFound(f"no node {node_id!r}")
        return self.view(node), self.store.recent_reports(node_id, min(report_limit or 20, 1000))

    def label_node(self, caller: Caller, node_id: str, set_labels: dict[str, str], remove: list[str]) -> NodeView:
        self._admin(caller, "node.label", node_id)
        node = self.store.get_node(node_id)
        if node is None:
            raise NotFound(f"no node {node_id!r}")
        labels = {k: v for k, v in node.labels.items() if k not in remove}
        labels.update(set_labels)
        try:
            labels = validate_labels(labels)
        except LabelError as exc:
            raise InvalidArgument(str(exc)) from None
        updated = self.store.set_labels(node_id, labels)
        self._audit(caller, "node.label", node_id, audit.ALLOWED, f"labels now {labels}")
        return self.view(updated)

    def revoke_node(self, caller: Caller, node_id: str, reason: str) -> NodeView:
        self._admin(caller, "node.revoke", node_id)
        node = self.store.revoke_node(node_id, self._clock())
        if node is None:
            raise NotFound(f"no node {node_id!r}")
        self._audit(caller, "node.revoke", node_id, audit.ALLOWED, reason or "revoked")
        return self.view(node)

    def list_audit(self, caller: Caller, after_sequence: int, limit: int) -> list[audit.AuditEntry]:
        self._admin(caller, "audit.list")
        return self.store.list_audit(after_sequence, min(limit or 100, 10_000))

    def verify_audit(self, caller: Caller) -> audit.ChainCheck:
        self._admin(caller, "audit.verify")
        return audit.verify_chain(self.store.iter_audit())

    def routing_totals(self, caller: Caller, node_id: str) -> list[NodeRoutingRecord]:
        """Per node, requests per (data class, route) summed from its reports; one node when node_id is given."""
        self._admin(caller, "audit.routing", node_id)
        if node_id and self.store.get_node(node_id) is None:
            raise NotFound(f"no node {node_id!r}")
        self.beats.flush()
        return self.store.routing_totals(node_id)


    # -- federated learning ----------------------------------------------------

    def _federation(self, caller: Caller, action: str, target: str = "") -> "federation.Federation":
        if self.federation is None:
            reason = federation.flower_available() or "central was started with --no-superlink"
            raise self._refuse(FailedPrecondition, caller, action, target,
                               f"federated learning is off on this central: {reason}")
        return self.federation

    def start_federated_run(self, caller: Caller, request: federation.RunRequest) -> FederatedRunView:
        action = "fl.start"
        self._admin(caller, action, request.task)
        fed = self._federation(caller, action, request.task)
        try:
            config = federation.run_config(request, fed.results_dir)
        except InvalidArgument as exc:
            raise self._refuse(InvalidArgument, caller, action, request.task, str(exc)) from None
        from federated import fab
        from federated.control import FlowerControlError
        fab_bytes, fab_hash = fab.build()
        try:
            run_id = fed.require_control().start_run(fab_bytes, fab_hash, config)
        except FlowerControlError as exc:
            raise self._refuse(FailedPrecondition, caller, action, request.task, str(exc)) from None
        record = FederatedRunRecord(run_id, request.task, config, caller.actor, self._clock(), "", None)
        self.store.add_federated_run(record)
        self._audit(caller, action, str(run_id), audit.ALLOWED,
                    f"{request.task}: {request.rounds} rounds, at least {request.min_nodes} nodes, "
                    f"secagg {'on' if request.secagg else 'OFF'}" + (f", clip {request.clip} noise {request.noise}"
                                                                    if request.clip else ""))
        return self._run_view(record, None)

    def get_federated_run(self, caller: Caller, run_id: int) -> FederatedRunView:
        self._admin(caller, "fl.status", str(run_id))
        record = self.store.get_federated_run(run_id)
        if record is None:
            raise NotFound(f"no federated run {run_id}")
        return self._imported_view(record, self._flower_runs())

    def list_federated_runs(self, caller: Caller) -> list[FederatedRunView]:
        self._admin(caller, "fl.list")
        flower = self._flower_runs()
        return [self._imported_view(r, flower) for r in self.store.list_federated_runs()]

    def _imported_view(self, record: FederatedRunRecord, flower: dict | None) -> FederatedRunView:
        """A finished run's view only once its outcome is imported, so `completed` always comes with its model."""
        view = self._run_view(record, flower)
        if record.imported_at is None and view.status in (federation.COMPLETED, federation.FAILED):
            self._import_outcome(_SystemCaller("federated-learning"), record, view)
            view = self._run_view(self.store.get_federated_run(record.run_id), flower)
        return view

    def _flower_runs(self) -> dict | None:
        """Every run the SuperLink knows, by id; None when it cannot be asked (then a missing run is not lost).

        All of them, not one by id: the SuperLink answers 404 for a run it does not know, which must
        read as "lost", not as "unreachable". Its state is in memory, so the list is short.
        """
        if self.federation is None:
            return None
        from federated.control import FlowerControlError
        try:
            return {r.run_id: r for r in self.federation.control.runs()}
        except FlowerControlError as exc:
            log.warning("cannot read run status from the SuperLink: %s", exc)
            return None

    def _run_view(self, record: FederatedRunRecord, flower: dict | None) -> FederatedRunView:
        results_dir = self.federation.results_dir if self.federation else None
        report = federation.read_report(results_dir, record.run_id) if results_dir else None
        flower_run = flower.get(record.run_id) if flower is not None else None
        if flower_run is None:
            status, error = federation.run_status("", "", "", report, lost=flower is not None)
        else:
            status, error = federation.run_status(flower_run.status, flower_run.sub_status, flower_run.details, report)
        names = {str(k.flower_node_id): k.node_id for k in self.store.flower_keys()}
        node_errors = {names.get(flower_id, f"flower-node-{flower_id}"): federation.last_line(reason)
                       for flower_id, reason in (report or {}).get("node_errors", {}).items()}
        return FederatedRunView(record, status, error, report or {}, node_errors)

    # A run's outcome is imported once: by the reconcile pass or by the first status call that sees it done.

    def reconcile_federation(self) -> None:
        """One pass: register new nodes' Flower keys, unregister revoked ones, import finished runs."""
        fed = self.federation
        if fed is None:
            return
        system = _SystemCaller("federated-learning")
        control = fed.control
        registered = control.registered_nodes()
        for action, key in federation.key_actions(self.store.flower_keys(), registered):
            if action == federation.REGISTER:
                flower_id = control.register_node(key.public_key, key.node_id)
                self.store.set_flower_registration(key.node_id, flower_id, False)
                self._audit(system, "fl.node.register", key.node_id, audit.ALLOWED, f"SuperLink node {flower_id}"
                            + (f" (the SuperLink had lost node {key.flower_node_id})" if key.flower_node_id else ""))
            else:
                if registered.get(key.flower_node_id, "unregistered") != "unregistered":
                    control.unregister_node(key.flower_node_id)
                self.store.set_flower_registration(key.node_id, key.flower_node_id, True)
                self._audit(system, "fl.node.unregister", key.node_id, audit.ALLOWED,
                            f"SuperLink node {key.flower_node_id}: the node was revoked")
        flower = self._flower_runs()
        for record in self.store.list_federated_runs():
            if record.imported_at is None:
                view = self._run_view(record, flower)
                if view.status in (federation.COMPLETED, federation.FAILED):
                    self._import_outcome(system, record, view)

    def _import_outcome(self, system: Caller, record: FederatedRunRecord, view: "FederatedRunView") -> None:
        # The reconcile thread and a status call may both get here: one imports, the other sees it done.
        with self._import_lock:
            current = self.store.get_federated_run(record.run_id)
            if current is None or current.imported_at is not None:
                return
            self._import_locked(system, record, view)

    def _import_locked(self, system: Caller, record: FederatedRunRecord, view: "FederatedRunView") -> None:
        model = ""
        if view.status == federation.COMPLETED and record.task == "sensitivity":
            from federated.results import onnx_path
            data = onnx_path(self.federation.results_dir, record.run_id).read_bytes()
            model = self._register_classifier(system, record.run_id, data)
        self.store.set_federated_run_outcome(record.run_id, model, self._clock())
        self._audit(system, "fl.finish", str(record.run_id),
                    audit.ALLOWED if view.status == federation.COMPLETED else audit.REFUSED,
                    f"{record.task} {view.status}" + (f": {view.error}" if view.error else "")
                    + (f"; registered {model}" if model else ""))

    def _register_classifier(self, system: Caller, run_id: int, data: bytes) -> str:
        version = f"fl-{run_id}"
        writer = self.blobs.writer()
        writer.write(data)
        sha256, size = writer.commit()
        self.finish_push(system, federation.CLASSIFIER_MODEL, version, "onnx",
                         {"kind": "sensitivity_classifier", "features": "hashed_ngrams_crc32_16384",
                          "federated_run": str(run_id)}, sha256, size)
        return f"{federation.CLASSIFIER_MODEL}@{version}"


@dataclass(frozen=True)
class FederatedRunView:
    record: FederatedRunRecord
    status: str
    error: str
    report: dict
    node_errors: dict[str, str]


def _usable(node_id: str, report: routing.RoutingReport | None) -> routing.RoutingReport | None:
    """The report, or None when it is malformed: its counts are left out, the rest of the beat is kept."""
    if report is None:
        return None
    problem = routing.problem(report)
    if problem:
        log.warning("ignored the routing summary of %s: %s", node_id, problem)
        return None
    return report


class _SystemCaller(Caller):
    """Central acting on its own (a finished run's outcome): the audit log names the part that acted."""

    def __init__(self, part: str):
        super().__init__(None, "central")
        object.__setattr__(self, "_part", part)

    @property
    def actor(self) -> str:
        return f"central:{self._part}"


class _TokenCaller(Caller):
    """An enrolling agent has no certificate yet: the audit log names it by its token id."""

    def __init__(self, token_id: str, peer: str):
        super().__init__(None, peer)
        object.__setattr__(self, "_token_id", token_id)

    @property
    def actor(self) -> str:
        return f"token:{self._token_id}"


_PARAM_KEY = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")


def validate_params(params: dict[str, str]) -> None:
    """Runtime parameters (n_ctx=4096): names like identifiers, short values, not too many."""
    if len(params) > 32:
        raise InvalidArgument(f"at most 32 parameters, got {len(params)}")
    for key, value in params.items():
        if not _PARAM_KEY.match(key):
            raise InvalidArgument(f"parameter name {key!r} must be lowercase letters, digits and '_'")
        if len(value) > 256:
            raise InvalidArgument(f"parameter {key}: the value is longer than 256 characters")
