"""AdminService on the model registry: push (checked header, stored blob, signed manifest), list, show,
delete, and assigning a version to one node."""

from __future__ import annotations

import re

from central import audit
from central.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ServiceError
from central.services.base import (
    Caller,
    Central,
    blob_store,
    manifest_signing_key,
    record_audit,
    refuse,
    require_admin,
    require_viewer,
)
from central.services.nodes import NodeView, view
from central.store import ModelRecord
from edgefleet import manifest as manifest_mod

_PARAM_KEY = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")


def check_push(
    central: Central, caller: Caller, name: str, version: str, fmt: str, params: dict[str, str], size: int, sha256: str
) -> None:
    """Validate a push's header before any bytes are stored."""
    require_admin(central, caller, "model.push", f"{name}@{version}")
    try:
        manifest_mod.validate_name_version(name, version)
    except manifest_mod.ManifestError as exc:
        raise InvalidArgument(str(exc)) from None
    if fmt not in manifest_mod.FORMATS:
        raise InvalidArgument(f"format must be one of {', '.join(manifest_mod.FORMATS)}, got {fmt!r}")
    if size <= 0 or len(sha256) != 64:
        raise InvalidArgument("the upload header must give the file's size (more than 0 bytes) and sha256")
    validate_params(params)


def refuse_push(central: Central, caller: Caller, name: str, version: str, detail: str) -> ServiceError:
    return refuse(central, InvalidArgument, caller, "model.push", f"{name}@{version}", detail + "; nothing stored")


def drop_unregistered_blob(central: Central, sha256: str) -> None:
    _drop_blob_if_unused(central, sha256)


def finish_push(
    central: Central, caller: Caller, name: str, version: str, fmt: str, params: dict[str, str], sha256: str, size: int
) -> tuple[ModelRecord, bool]:
    """Register the stored blob as name@version; (record, already_present)."""
    existing = central.store.get_model(name, version)
    if existing is not None:
        if existing.sha256 == sha256:
            return existing, True
        _drop_blob_if_unused(central, sha256)
        raise refuse(
            central,
            AlreadyExists,
            caller,
            "model.push",
            f"{name}@{version}",
            f"{name}@{version} already exists with other bytes (sha256 {existing.sha256[:12]}…);"
            " versions are immutable: push a new version",
        )
    manifest = manifest_mod.Manifest(name, version, fmt, sha256, size, dict(params), central.clock(), caller.actor)
    body, signature = manifest_mod.sign(manifest, manifest_signing_key(central))
    record = ModelRecord(
        name, version, fmt, sha256, size, dict(params), manifest.created_at, caller.actor, body, signature
    )
    central.store.add_model(record)
    record_audit(central, caller, "model.push", f"{name}@{version}", audit.ALLOWED, f"sha256 {sha256}, {size} bytes")
    return record, False


def list_models(central: Central, caller: Caller, name: str) -> list[ModelRecord]:
    require_viewer(central, caller, "model.list")
    return central.store.list_models(name)


def get_model(central: Central, caller: Caller, name: str, version: str) -> tuple[ModelRecord, list[str]]:
    require_viewer(central, caller, "model.get", f"{name}@{version}")
    model = _model(central, name, version)
    return model, _assigned_to(central, model)


def delete_model(central: Central, caller: Caller, name: str, version: str) -> bool:
    target = f"{name}@{version}"
    require_admin(central, caller, "model.delete", target)
    model = _model(central, name, version)
    assigned = central.store.delete_model(name, version)
    if assigned:
        raise refuse(
            central,
            FailedPrecondition,
            caller,
            "model.delete",
            target,
            f"{target} is assigned to {len(assigned)} node(s) ({', '.join(assigned[:5])}); "
            "assign them another version first",
        )
    removed = _drop_blob_if_unused(central, model.sha256)
    record_audit(
        central, caller, "model.delete", target, audit.ALLOWED, "deleted" + (" with its blob" if removed else "")
    )
    return removed


def assign_model(central: Central, caller: Caller, node_id: str, name: str, version: str) -> NodeView:
    target = f"{name}@{version}"
    require_admin(central, caller, "node.assign", node_id)
    model = _model(central, name, version)
    node = central.store.assign_model(node_id, model)
    if node is None:
        raise NotFound(f"no node {node_id!r}")
    record_audit(central, caller, "node.assign", node_id, audit.ALLOWED, f"assigned {target}")
    return view(central, node)


def assigned_nodes(central: Central, sha256: str) -> list[str]:
    """Every node assigned a version with these bytes (what a push's answer lists)."""
    return central.store.nodes_assigned(sha256)


def validate_params(params: dict[str, str]) -> None:
    """Runtime parameters (n_ctx=4096): names like identifiers, short values, not too many."""
    if len(params) > 32:
        raise InvalidArgument(f"at most 32 parameters, got {len(params)}")
    for key, value in params.items():
        if not _PARAM_KEY.match(key):
            raise InvalidArgument(f"parameter name {key!r} must be lowercase letters, digits and '_'")
        if len(value) > 256:
            raise InvalidArgument(f"parameter {key}: the value is longer than 256 characters")


def _model(central: Central, name: str, version: str) -> ModelRecord:
    model = central.store.get_model(name, version)
    if model is None:
        raise NotFound(f"no model {name}@{version}")
    return model


def _assigned_to(central: Central, model: ModelRecord) -> list[str]:
    return [
        n
        for n in central.store.nodes_assigned(model.sha256)
        # A node removed since nodes_assigned() read it is no longer assigned anything.
        if (node := central.store.get_node(n)) is not None and node.desired_model.get("version") == model.version
    ]


def _drop_blob_if_unused(central: Central, sha256: str) -> bool:
    if central.store.models_with_sha256(sha256):
        return False
    blob_store(central).delete(sha256)
    return True
