"""Switching the agent to the model version central assigns, safely.

One activation at a time, on its own thread: verify the signed manifest against
the signing keys the node trusts (trust_state), download into the inactive slot (resuming after a
broken connection), check the bytes' sha256, load the model beside the current
one, generate a test answer, then switch: requests in flight finish on the old
model, new ones go to the new. Only after the switch does the slot pointer
move, so a crash at any point restarts on the last good model. Anything that
fails leaves the current model serving and is reported as FAILED with the
reason; the same version is not retried until central assigns another.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

from edge_agent.config import FleetConfig
from edge_agent.control import policy
from edge_agent.control.artifacts import ArtifactError, ModelSlots
from edge_agent.control.client import CentralUnavailable, ControlError, FleetClient, ModelInfo
from edge_agent.errors import AgentError
from edge_agent.service import InferenceService, ServingModel
from edgefleet.backoff import backoff_delay
from edgefleet.manifest import Manifest

log = logging.getLogger(__name__)

DOWNLOADING, VERIFYING, WARMING, ACTIVE, FAILED, ROLLED_BACK = (
    "DOWNLOADING",
    "VERIFYING",
    "WARMING",
    "ACTIVE",
    "FAILED",
    "ROLLED_BACK",
)
DOWNLOAD_RETRY_CAP_S = 30.0


@dataclass(frozen=True)
class ActivationStatus:
    model: ModelInfo | None = None
    state: str = ""
    bytes_done: int = 0
    bytes_total: int = 0
    reason: str = ""
    since: float = 0.0


class Activator:
    def __init__(
        self,
        slots: ModelSlots,
        client: Callable[[], FleetClient],
        service: InferenceService,
        loop: asyncio.AbstractEventLoop,
        load: Callable[[Manifest, Path], ServingModel],
        drain_timeout_s: float,
        fleet: FleetConfig,
        clock: Callable[[], float] = time.time,
    ):
        self.slots = slots
        self._fleet = fleet
        self._probation_until = 0.0
        self._client = client
        self._service = service
        self._loop = loop
        self._load = load
        self._drain_timeout_s = drain_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.status = ActivationStatus()
        # Called (on the activation thread) after each change of state, so `edge-agent status` shows a short
        # state such as WARMING as it happens rather than at the next heartbeat.
        self.on_state_change: Callable[[], None] | None = None
        installed = slots.active()
        # The slot's version, not the bytes served: the same bytes under the config's built-in name still
        # get installed and switched to, so the model id and the rollback slot follow central.
        self._active_sha256 = installed.manifest.sha256 if installed else ""

    def want(self, model: ModelInfo | None, manifest_body: bytes, signature: str) -> None:
        """Called with each heartbeat's desired model; starts an activation when there is something to do."""
        if model is None:
            return
        with self._lock:
            self._judge_probation_locked()
            if manifest_body and not (self._thread is not None and self._thread.is_alive()):
                self.slots.adopt_signature(manifest_body, signature)
            if self._active_sha256 == model.sha256 and self._serves(model):
                if self.status.model is None:  # after a restart: report what the slot serves
                    self._set(model=model, state=ACTIVE)
                return
            busy = self._thread is not None and self._thread.is_alive()
            # The whole assignment, not its bytes alone: a new version of the same bytes is another version.
            same = self.status.model == model
            if busy or (same and self.status.state in (FAILED, ROLLED_BACK, ACTIVE)):
                return  # one at a time; a failed version waits for central to assign another
            self._set(model=model, state=VERIFYING, bytes_done=0, bytes_total=0, reason="")
            self._thread = threading.Thread(
                target=self._run, args=(model, manifest_body, signature), name="edgefleet-activation", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _serves(self, model: ModelInfo) -> bool:
        """Whether the model serving now is `model` under its name and version, not only its bytes. The same file
        pushed again as another version (or name) is switched to like any version (loaded from the slot that holds
        it, nothing downloaded), so the box reports, and clients ask for, what central assigned."""
        served = self._service.current.backend.artifact
        return (served.sha256, served.name, served.version) == (model.sha256, model.name, model.version)

    # -- probation ---------------------------------------------------------------

    def _judge_probation_locked(self) -> None:
        """Each heartbeat during probation: judge the window since the last beat; on a breach switch back."""
        on_probation = self.status.model  # set by the activation that started the probation
        busy = self._thread is not None and self._thread.is_alive()
        if not self._probation_until or on_probation is None or busy:
            return
        window = self._service.metrics.probation.take(0, time.monotonic())
        if self._clock() > self._probation_until:
            self._probation_until = 0.0
            log.info("probation of %s passed", on_probation.version)
            return
        f = self._fleet
        breach = policy.probation_breach(
            window.requests, window.errors, window.latency_p99_ms, f.probation_max_error_rate, f.probation_max_p99_ms
        )
        if breach:
            self._probation_until = 0.0
            self._thread = threading.Thread(
                target=self._roll_back, args=(on_probation, breach), name="edgefleet-rollback", daemon=True
            )
            self._thread.start()

    def _roll_back(self, bad: ModelInfo, breach: str) -> None:
        log.error("%s@%s breached its probation (%s); switching back", bad.name, bad.version, breach)
        previous = self.slots.inactive()
        if previous is None:
            log.error("no previous version on disk to switch back to; %s serves on", bad.version)
            self._set(reason=f"probation breached ({breach}) but no previous version is on disk")
            return
        try:
            serving = self._load(previous.manifest, previous.path)
            self._warm(serving)
            self._switch(serving)
            self.slots.activate(previous.slot)
            self._active_sha256 = previous.manifest.sha256
            self._set(state=ROLLED_BACK, reason=f"probation breached: {breach}")
        except (AgentError, OSError, TimeoutError, concurrent.futures.TimeoutError) as exc:
            log.error("could not switch back to %s: %s", previous.manifest.ref, exc)

    def _warm(self, serving: ServingModel) -> None:
        """The test generation, within warmup_max_s: a version that cannot answer in time is not switched to."""
        started = time.monotonic()
        try:
            asyncio.run_coroutine_threadsafe(self._service.warm_up(serving), self._loop).result(
                timeout=self._fleet.warmup_max_s
            )
        except concurrent.futures.TimeoutError:
            serving.close()
            raise ArtifactError(f"the test generation took more than {self._fleet.warmup_max_s:g} s") from None
        except BaseException:
            serving.close()
            raise
        log.info("test generation on %s answered in %.2f s", serving.model_id, time.monotonic() - started)

    def _switch(self, serving: ServingModel) -> None:
        asyncio.run_coroutine_threadsafe(
            self._service.switch_to(serving, self._drain_timeout_s, warm=False), self._loop
        ).result(timeout=self._drain_timeout_s + 60)

    def _set(self, **changes) -> None:
        if "state" in changes:
            changes["since"] = self._clock()
        self.status = replace(self.status, **changes)
        if "state" in changes and self.on_state_change is not None:
            self.on_state_change()

    def _run(self, model: ModelInfo, body: bytes, signature: str) -> None:
        try:
            manifest = self.slots.verify_manifest(body, signature)
            if manifest.sha256 != model.sha256:
                raise ArtifactError("the signed manifest names other bytes than the assignment")
            self._set(state=DOWNLOADING, bytes_total=manifest.size)
            path = self._download(manifest)
            self._set_progress(manifest.size, manifest.size)  # all there, also when a slot held them already
            self._set(state=WARMING)
            short = policy.memory_shortfall(psutil.virtual_memory().available, manifest.size)
            if short:
                # Loading beside the current model is what keeps every request answered; without the memory
                # for it, refuse rather than risk the kernel's OOM killer taking the serving process.
                raise ArtifactError(
                    f"not enough memory to load {manifest.ref} beside the current model: {short >> 20} MiB short"
                )
            serving = self._load(manifest, path)
            self._warm(serving)
            self._switch(serving)
            installed = next(
                (
                    m
                    for m in (self.slots.inactive(), self.slots.active())
                    if m is not None and m.manifest.sha256 == manifest.sha256
                ),
                None,
            )
            if installed is None:
                raise ArtifactError("the verified model vanished from its slot")
            self.slots.activate(installed.slot, manifest)
            self._active_sha256 = manifest.sha256
            self._set(state=ACTIVE)
            if self._fleet.probation_s > 0:
                self._service.metrics.probation.take(0, time.monotonic())  # judge only what follows
                self._probation_until = self._clock() + self._fleet.probation_s
            log.info("activated %s@%s (sha256 %s)", manifest.name, manifest.version, manifest.sha256[:12])
        except (AgentError, OSError, TimeoutError, concurrent.futures.TimeoutError) as exc:
            reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
            self._set(state=FAILED, reason=reason)
            log.error("could not activate %s@%s: %s; the current model serves on", model.name, model.version, reason)

    def _download(self, manifest: Manifest) -> Path:
        failures = 0
        while True:
            try:
                return self.slots.download(
                    manifest,
                    lambda offset: self._client().fetch_artifact(manifest.sha256, offset),
                    progress=lambda done, total: self._set_progress(done, total),
                )
            except CentralUnavailable as exc:
                # A broken connection: keep the part and resume when central answers again.
                failures += 1
                log.warning("download of %s interrupted (%s); resuming", manifest.ref, exc)
                if self._stop.wait(backoff_delay(failures, 1.0, DOWNLOAD_RETRY_CAP_S, 0.5)):
                    raise ArtifactError("the agent is stopping") from None
            except ControlError as exc:
                raise ArtifactError(str(exc)) from None

    def _set_progress(self, done: int, total: int) -> None:
        self.status = replace(self.status, bytes_done=done, bytes_total=total)
