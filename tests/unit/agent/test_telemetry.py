import importlib.util
import os
import shutil
import sys
import types
from collections import namedtuple

import psutil
import pytest

from edge_agent.control.telemetry import (
    GpuSample,
    SystemProbe,
    Temperature,
    parse_tegrastats,
    read_tegrastats_once,
    sensors_to_temperatures,
)

MiB = 1024 * 1024

# Real tegrastats lines: Orin Nano (JetPack 5), AGX Orin (JetPack 6), Nano (JetPack 4).
ORIN_NANO = (
    "RAM 2448/7620MB (lfb 3x4MB) SWAP 0/3810MB (cached 0MB) CPU [2%@729,1%@729,0%@729,0%@729,off,off] "
    "EMC_FREQ 0% GR3D_FREQ 0% cpu@47.375C soc2@46.968C soc0@47.156C gpu@46.812C tj@47.375C soc1@47.187C"
)
AGX_ORIN = (
    "RAM 3301/30536MB (lfb 5812x4MB) SWAP 0/15268MB (cached 0MB) CPU [1%@2201,0%@2201,0%@2201,0%@2201,"
    "0%@2201,0%@2201,0%@2201,0%@2201] EMC_FREQ 0%@3199 GR3D_FREQ 61%@[1300,1300] CV0@0C CPU@49.312C "
    "Tboard@37C SOC2@45.437C Tdiode@39.75C SOC0@46.25C CV1@0C GPU@45.937C tj@49.562C SOC1@45.281C CV2@0C "
    "VDD_GPU_SOC 3265mW/3265mW VDD_CPU_CV 816mW/816mW VIN_SYS_5V0 4232mW/4232mW"
)
NANO = (
    "RAM 1648/3964MB (lfb 54x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
    "CPU [10%@1479,6%@1479,4%@1479,3%@1479] EMC_FREQ 3%@1600 GR3D_FREQ 0%@76 APE 25 PLL@31C CPU@34C "
    "PMIC@100C GPU@32.5C AO@40.5C thermal@33.25C POM_5V_IN 2283/2283 POM_5V_GPU 0/0 POM_5V_CPU 440/440"
)


def fake_jetson_tegrastats() -> str:
    """Stands in for tegrastats on Jetson hardware, which this machine is not."""
    return AGX_ORIN


def _no_gpu_source_here() -> bool:
    return importlib.util.find_spec("pynvml") is None and shutil.which("tegrastats") is None


def test_sample_of_this_machine(tmp_path):
    s = SystemProbe(tmp_path).sample()
    assert s.cpu_count >= 1
    assert 0.0 <= s.cpu_percent <= 100.0 * s.cpu_count
    assert s.load_average_1m >= 0.0
    assert s.memory_total_bytes > s.memory_used_bytes > 0
    assert s.disk_total_bytes > 0 and 0 <= s.disk_used_bytes <= s.disk_total_bytes
    assert all(isinstance(t, Temperature) for t in s.temperatures)
    if _no_gpu_source_here():
        assert s.gpus == ()


def test_sample_of_a_data_dir_not_yet_created(tmp_path):
    assert SystemProbe(tmp_path / "not" / "yet").sample().disk_total_bytes > 0


def test_orin_nano_line():
    gpu, temps = parse_tegrastats(ORIN_NANO)
    assert gpu == GpuSample("jetson-gpu", 0.0, 2448 * MiB, 7620 * MiB, 46.812, "tegrastats")
    assert [t.sensor for t in temps] == ["cpu", "soc2", "soc0", "gpu", "tj", "soc1"]
    assert Temperature("tj", 47.375) in temps


def test_agx_orin_line_skips_disabled_sensors():
    gpu, temps = parse_tegrastats(AGX_ORIN)
    assert gpu is not None
    assert gpu.utilization_percent == 61.0
    assert (gpu.memory_used_bytes, gpu.memory_total_bytes) == (3301 * MiB, 30536 * MiB)
    assert gpu.temperature_celsius == 45.937
    names = [t.sensor for t in temps]
    assert len(temps) == 8
    assert not {"CV0", "CV1", "CV2"} & set(names)
    assert Temperature("Tboard", 37.0) in temps and Temperature("Tdiode", 39.75) in temps


def test_nano_line_skips_pmic_placeholder():
    gpu, temps = parse_tegrastats(NANO)
    assert gpu == GpuSample("jetson-gpu", 0.0, 1648 * MiB, 3964 * MiB, 32.5, "tegrastats")
    assert [t.sensor for t in temps] == ["PLL", "CPU", "GPU", "AO", "thermal"]


@pytest.mark.parametrize(
    "line", ["", "   ", "garbage", "GR3D_FREQ 5% gpu@40C", "RAM lots CPU@40C", "Traceback (most recent call last):"]
)
def test_lines_that_are_not_tegrastats(line):
    assert parse_tegrastats(line) == (None, ())


def test_probe_reports_the_jetson_gpu(tmp_path):
    s = SystemProbe(tmp_path, tegrastats_reader=fake_jetson_tegrastats).sample()
    if importlib.util.find_spec("pynvml") is None:
        assert s.gpus == (GpuSample("jetson-gpu", 61.0, 3301 * MiB, 30536 * MiB, 45.937, "tegrastats"),)


@pytest.mark.parametrize("reader_result", [None, "", "not tegrastats", RuntimeError("tegrastats died")])
def test_failing_tegrastats_leaves_gpus_empty(tmp_path, reader_result):
    def reader():
        if isinstance(reader_result, Exception):
            raise reader_result
        return reader_result

    s = SystemProbe(tmp_path, tegrastats_reader=reader).sample()
    if importlib.util.find_spec("pynvml") is None:
        assert s.gpus == ()
    assert s.memory_total_bytes > 0


def _fake_pynvml(init_error: Exception | None = None) -> types.ModuleType:
    """Stands in for nvidia-ml-py on a machine with one NVIDIA GPU."""
    nvml = types.ModuleType("pynvml")
    nvml.NVML_TEMPERATURE_GPU = 0

    def init():
        if init_error:
            raise init_error

    nvml.nvmlInit = init
    nvml.nvmlDeviceGetCount = lambda: 1
    nvml.nvmlDeviceGetHandleByIndex = lambda i: ("handle", i)
    nvml.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=2 * MiB, total=80 * 1024 * MiB)
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=37, memory=5)
    nvml.nvmlDeviceGetTemperature = lambda h, sensor: 41
    return nvml


def test_nvml_gpu_is_preferred_over_tegrastats(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml())
    s = SystemProbe(tmp_path, tegrastats_reader=fake_jetson_tegrastats).sample()
    assert s.gpus == (GpuSample("NVIDIA H100 80GB HBM3", 37.0, 2 * MiB, 80 * 1024 * MiB, 41.0, "nvml"),)


def test_nvml_init_failure_falls_back_to_tegrastats(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(init_error=OSError("libnvidia-ml.so.1 not found")))
    s = SystemProbe(tmp_path, tegrastats_reader=fake_jetson_tegrastats).sample()
    assert [g.source for g in s.gpus] == ["tegrastats"]


def test_sensors_are_named_chip_slash_label():
    shwtemp = namedtuple("shwtemp", "label current high critical")
    chips = {
        "coretemp": [shwtemp("Package id 0", 45.0, 80.0, 100.0), shwtemp("", 44.0, None, None)],
        "acpitz": [shwtemp("", 27.8, None, None)],
    }
    assert sensors_to_temperatures(chips) == (
        Temperature("acpitz", 27.8),
        Temperature("coretemp/Package id 0", 45.0),
        Temperature("coretemp", 44.0),
    )


def _fake_tegrastats_on_path(tmp_path, monkeypatch, output: str) -> None:
    """A ``tegrastats`` script that prints ``output``, records its args, then keeps running."""
    sleep = shutil.which("sleep")
    script = tmp_path / "bin" / "tegrastats"
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\n{output}exec {sleep} 30\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(script.parent))


def _assert_no_child_left() -> None:
    # Only our fake tegrastats counts: session fixtures may have agent processes running as our children.
    def is_fake_tegrastats(proc):
        try:
            return any("tegrastats" in part for part in proc.cmdline()) or proc.name() == "sleep"
        except psutil.NoSuchProcess:
            return False

    assert [p for p in psutil.Process().children(recursive=True) if is_fake_tegrastats(p)] == []


@pytest.mark.skipif(os.name != "posix", reason="tegrastats runs on Linux (Jetson) only")
def test_read_tegrastats_once_reads_one_line_and_kills_it(tmp_path, monkeypatch):
    _fake_tegrastats_on_path(tmp_path, monkeypatch, f"echo '{NANO}'\necho second line\n")
    assert read_tegrastats_once() == NANO
    assert (tmp_path / "args").read_text().split() == ["--interval", "100"]
    _assert_no_child_left()


@pytest.mark.skipif(os.name != "posix", reason="tegrastats runs on Linux (Jetson) only")
def test_silent_tegrastats_gives_none_at_the_deadline(tmp_path, monkeypatch):
    _fake_tegrastats_on_path(tmp_path, monkeypatch, "")
    assert read_tegrastats_once(timeout_s=0.2) is None
    _assert_no_child_left()


def test_no_tegrastats_on_path_gives_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert read_tegrastats_once() is None
