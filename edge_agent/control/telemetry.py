"""What the device looks like right now: CPU, memory, disk, temperatures, GPUs.

psutil's core figures are always present; every optional source (temperature
sensors, NVML, Jetson's ``tegrastats``) degrades to an empty part and never
raises, because a heartbeat without a GPU figure is better than no heartbeat.
NVML (package nvidia-ml-py) is tried first; ``tegrastats`` only when NVML gave
nothing, since Jetson has no NVML and its GPU shares the system RAM.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from edgefleet import report_limits

log = logging.getLogger(__name__)

_UNITS = {"kB": 1024, "MB": 1024**2, "GB": 1024**3}
_RAM = re.compile(r"\bRAM (\d+)/(\d+)(kB|MB|GB)\b")
# "GR3D_FREQ 0%", "0%@76" (Nano), "61%@[1300,1300]" (Orin, one clock per GPC).
_GR3D = re.compile(r"\bGR3D_FREQ \[?(\d+)%")
# "gpu@46.812C", "Tdiode@39.75C"; CPU load tokens ("2%@729") and clocks never end in C.
_SENSOR = re.compile(r"(?<![\w%@.])([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C(?![\w])")


@dataclass(frozen=True)
class Temperature:
    sensor: str
    celsius: float


@dataclass(frozen=True)
class GpuSample:
    name: str
    utilization_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_celsius: float  # 0.0 when the source has no GPU sensor
    source: str  # "nvml" or "tegrastats"


@dataclass(frozen=True)
class SystemSample:
    cpu_percent: float
    cpu_count: int
    load_average_1m: float
    memory_used_bytes: int
    memory_total_bytes: int
    disk_used_bytes: int
    disk_total_bytes: int
    temperatures: tuple[Temperature, ...]
    gpus: tuple[GpuSample, ...]


def parse_tegrastats(line: str) -> tuple[GpuSample | None, tuple[Temperature, ...]]:
    """One line of ``tegrastats`` output as a GPU sample and its temperature sensors.

    Sensors at exactly 0C are disabled ones (CV0..CV2 on Orin) and PMIC@100C is
    a fixed placeholder, so both are left out rather than reported as readings.
    A line without the leading RAM figure is not tegrastats output: (None, ()).
    """
    ram = _RAM.search(line)
    if ram is None:
        return None, ()
    temps = tuple(
        Temperature(name, celsius)
        for name, celsius in ((m.group(1), float(m.group(2))) for m in _SENSOR.finditer(line))
        if celsius != 0.0 and not (name.upper() == "PMIC" and celsius == 100.0)
    )
    gr3d = _GR3D.search(line)
    if gr3d is None:
        return None, temps
    unit = _UNITS[ram.group(3)]
    gpu_temp = next((t.celsius for t in temps if t.sensor.lower() == "gpu"), 0.0)
    gpu = GpuSample(
        "jetson-gpu",
        float(gr3d.group(1)),
        int(ram.group(1)) * unit,
        int(ram.group(2)) * unit,
        gpu_temp,
        source="tegrastats",
    )
    return gpu, temps


def read_tegrastats_once(timeout_s: float = 1.0) -> str | None:
    """One line from a short-lived ``tegrastats``; None when absent or silent.

    tegrastats runs until killed, so it is read with a deadline and then killed
    by pid; a stuck or missing binary never holds up the heartbeat by more
    than ``timeout_s``.
    """
    binary = shutil.which("tegrastats")
    if binary is None:
        return None
    try:
        proc = subprocess.Popen(
            [binary, "--interval", "100"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
    except OSError as exc:
        log.debug("cannot run %s: %s", binary, exc)
        return None
    stdout = proc.stdout
    assert stdout is not None  # stdout=PIPE
    try:
        return _read_line(stdout.fileno(), time.monotonic() + timeout_s)
    finally:
        proc.kill()
        proc.wait()
        stdout.close()


def _read_line(fd: int, deadline: float) -> str | None:
    """The first line written to ``fd`` before ``deadline`` (select, not a blocking readline)."""
    buffer = b""
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buffer += chunk
    line = buffer.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    return line or None


def sensors_to_temperatures(chips: Mapping[str, Sequence[Any]]) -> tuple[Temperature, ...]:
    """psutil's ``{chip: [shwtemp(label, current, ...)]}`` as "chip/label" (or "chip") readings."""
    return tuple(
        Temperature(f"{chip}/{entry.label}" if entry.label else chip, float(entry.current))
        for chip, entries in sorted(chips.items())
        for entry in entries
        if entry.current is not None
    )


class SystemProbe:
    """Samples the host on demand; cheap enough to call on every heartbeat."""

    def __init__(self, data_dir: Path, tegrastats_reader: Callable[[], str | None] | None = None):
        self._data_dir = Path(data_dir)
        self._read_tegrastats = tegrastats_reader or read_tegrastats_once
        self._nvml: Any = None  # the pynvml module once initialised; False when unavailable
        psutil.cpu_percent(interval=None)  # primes the counter: the first sample measures since now

    def sample(self) -> SystemSample:
        vm = psutil.virtual_memory()
        disk = psutil.disk_usage(str(_existing_ancestor(self._data_dir)))
        temperatures = self._temperatures()
        gpus = self._nvml_gpus()
        if not gpus:
            gpus, jetson_temps = self._tegrastats_gpus()
            # psutil already reads Jetson's thermal zones; tegrastats only fills a gap.
            temperatures = temperatures or jetson_temps
        temperatures, gpus = within_report_bounds(temperatures, gpus)
        return SystemSample(
            cpu_percent=float(psutil.cpu_percent(interval=None)),
            cpu_count=psutil.cpu_count() or 1,
            load_average_1m=_load_average_1m(),
            memory_used_bytes=int(vm.total - vm.available),
            memory_total_bytes=int(vm.total),
            disk_used_bytes=int(disk.used),
            disk_total_bytes=int(disk.total),
            temperatures=temperatures,
            gpus=gpus,
        )

    def _temperatures(self) -> tuple[Temperature, ...]:
        read = getattr(psutil, "sensors_temperatures", None)
        if read is None:
            return ()
        try:
            return sensors_to_temperatures(read() or {})
        except Exception as exc:  # noqa: BLE001 - sensors are optional, a driver may fail any way
            log.debug("temperature sensors unreadable: %s", exc)
            return ()

    def _nvml_gpus(self) -> tuple[GpuSample, ...]:
        if self._nvml is None:
            self._nvml = _init_nvml()
        if not self._nvml:
            return ()
        nvml = self._nvml
        try:
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
            return tuple(_nvml_sample(nvml, handle) for handle in handles)
        except Exception as exc:  # noqa: BLE001 - pynvml raises NVMLError and driver-specific errors
            log.debug("NVML sample failed: %s", exc)
            return ()

    def _tegrastats_gpus(self) -> tuple[tuple[GpuSample, ...], tuple[Temperature, ...]]:
        try:
            line = self._read_tegrastats()
        except Exception as exc:  # noqa: BLE001 - an optional source never fails a sample
            log.debug("tegrastats unreadable: %s", exc)
            return (), ()
        if not line:
            return (), ()
        gpu, temps = parse_tegrastats(line)
        return ((gpu,) if gpu else ()), temps


def within_report_bounds(
    temperatures: tuple[Temperature, ...], gpus: tuple[GpuSample, ...]
) -> tuple[tuple[Temperature, ...], tuple[GpuSample, ...]]:
    """The first sensors and GPUs, as many as central takes in a status, names cut to its bounds
    (edgefleet.report_limits): a box with a hundred sensors reports 64 of them, never an oversized status."""
    bounds, names = report_limits.REPEATED_BOUNDS, report_limits.STRING_BOUNDS
    sensor = names["edgefleet.v1.Temperature.sensor"]
    gpu_name, source = names["edgefleet.v1.GpuMetrics.name"], names["edgefleet.v1.GpuMetrics.source"]
    return (
        tuple(
            Temperature(t.sensor[:sensor], t.celsius)
            for t in temperatures[: bounds["edgefleet.v1.SystemMetrics.temperatures"]]
        ),
        tuple(
            dataclasses.replace(g, name=g.name[:gpu_name], source=g.source[:source])
            for g in gpus[: bounds["edgefleet.v1.SystemMetrics.gpus"]]
        ),
    )


def _nvml_sample(nvml: Any, handle: Any) -> GpuSample:
    name, memory = nvml.nvmlDeviceGetName(handle), nvml.nvmlDeviceGetMemoryInfo(handle)
    return GpuSample(
        name=name.decode() if isinstance(name, bytes) else str(name),  # older pynvml returns bytes
        utilization_percent=float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        memory_used_bytes=int(memory.used),
        memory_total_bytes=int(memory.total),
        temperature_celsius=float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
        source="nvml",
    )


def _init_nvml() -> Any:
    """The initialised pynvml module, or False (logged once, at debug) when there is none."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception as exc:  # noqa: BLE001 - ImportError, NVMLError_LibraryNotFound, driver errors
        log.debug("no NVML GPUs: %s", exc)
        return False


def _load_average_1m() -> float:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):  # Windows has no getloadavg
        return 0.0


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest existing parent, so a data dir not yet created still has a disk."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
