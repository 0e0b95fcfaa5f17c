"""``edge-agent doctor``: what acceleration this box really has, against what the config asks for.

Two halves, as elsewhere in the agent. :func:`gather` probes the box into :class:`Facts`, a plain
value: the CUDA driver (``libcuda``), NVML or ``tegrastats`` through the heartbeat's own
:class:`~edge_agent.control.telemetry.SystemProbe`, NVIDIA device nodes, Jetson's release files,
onnxruntime's providers, the llama.cpp build (its ggml backends and devices), memory, disk and the
model file. :func:`diagnose` turns facts and config into findings and touches nothing, so every
combination (a GPU, a Jetson) is unit-tested on machines that have neither.

A finding is OK, INFO, WARN or FAIL. FAIL: the agent cannot do what the config asks at all (no
llama.cpp, a missing model or ONNX file, a model bigger than the memory it must fit in). A GPU
that is absent while the config does not ask for one is INFO. :attr:`Report.exit_code` is 1 when
anything FAILs, else 0. Nothing here writes: a built-in model not yet assembled is only measured.
"""

from __future__ import annotations

import ctypes
import dataclasses
import glob
import logging
import os
import platform
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import psutil

from edge_agent.config import AgentConfig
from federated.supernode_runtime import Participation

log = logging.getLogger(__name__)

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"
GiB = 1 << 30
# ggml backend registries that run on the CPU; any other one (CUDA, Metal, Vulkan, ROCm, ...) drives a GPU.
_CPU_BACKENDS = frozenset({"CPU", "BLAS", "RPC", "ZenDNN", "zDNN"})
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}  # enum ggml_backend_dev_type
_JETPACK = {"R32": "JetPack 4", "R35": "JetPack 5", "R36": "JetPack 6"}
_DISK_LOW_BYTES = 1 * GiB
NOT_PROBED = Participation(False, reason="not probed")


# -- facts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuDevice:
    name: str
    memory_total_bytes: int
    memory_free_bytes: int = -1  # -1: the source does not say
    compute_capability: str = ""  # "8.7"; CUDA driver only
    source: str = ""  # "cuda", "nvml", "tegrastats"


@dataclass(frozen=True)
class CudaFacts:
    library: str = ""  # the driver library loaded, "" when there is none
    driver_version: str = ""  # "12.6"; "" without a driver library
    devices: tuple[GpuDevice, ...] = ()
    error: str = ""  # why there is no device


@dataclass(frozen=True)
class DeviceNode:
    path: str
    accessible: bool  # readable and writable by this user


@dataclass(frozen=True)
class JetsonFacts:
    model: str = ""  # /proc/device-tree/model
    l4t_release: str = ""  # "R36.4.0", from /etc/nv_tegra_release
    tegrastats: str = ""  # path on PATH, "" when absent
    jtop: str = ""
    nvpmodel: str = ""


@dataclass(frozen=True)
class OnnxFacts:
    version: str = ""  # "" when onnxruntime is not installed
    providers: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class LlamaDevice:
    name: str
    description: str
    type: str  # "cpu", "gpu" (dedicated memory), "igpu" (host memory: Jetson), "accel"
    memory_free_bytes: int
    memory_total_bytes: int


@dataclass(frozen=True)
class LlamaFacts:
    version: str = ""  # "" when llama_cpp cannot be imported
    gpu_offload: bool = False  # llama_supports_gpu_offload(): a GPU device is there to offload to
    backends: tuple[str, ...] = ()  # ggml backends compiled in, e.g. ("CUDA", "CPU")
    devices: tuple[LlamaDevice, ...] = ()
    system_info: str = ""  # llama_print_system_info()
    error: str = ""


@dataclass(frozen=True)
class ModelFacts:
    name: str = ""
    path: str = ""
    size_bytes: int = 0
    source: str = ""  # "config" or "fleet" (the version central assigned wins over the config)
    present: bool = False  # False: a built-in the first serve assembles into the data dir
    error: str = ""


@dataclass(frozen=True)
class Facts:
    python_version: str
    platform: str
    machine: str
    cpu_count: int
    memory_total_bytes: int
    memory_available_bytes: int
    data_dir: str
    disk_free_bytes: int
    disk_total_bytes: int
    cuda: CudaFacts
    telemetry_gpus: tuple[GpuDevice, ...]  # what heartbeats report: NVML, else tegrastats
    device_nodes: tuple[DeviceNode, ...]
    nvidia_smi: str
    jetson: JetsonFacts | None
    onnxruntime: OnnxFacts
    llama: LlamaFacts
    model: ModelFacts
    # Whether a SuperNode can run here (which Python) and, when not, why and the steps; and what the
    # enrollment lacks for federated learning ("" when nothing).
    supernode: Participation = NOT_PROBED
    superlink_problem: str = ""


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # OK, INFO, WARN or FAIL
    message: str


@dataclass(frozen=True)
class Report:
    facts: Facts
    asks: dict
    findings: tuple[Finding, ...]

    @property
    def gpu_present(self) -> bool:
        return gpu_present(self.facts)

    @property
    def exit_code(self) -> int:
        return 1 if any(f.status == FAIL for f in self.findings) else 0

    def as_json(self) -> dict:
        return {
            "ok": self.exit_code == 0,
            "gpu": {"present": self.gpu_present, "devices": _gpu_names(self.facts)},
            "asks": self.asks,
            "findings": [dataclasses.asdict(f) for f in self.findings],
            "facts": dataclasses.asdict(self.facts),
        }


# -- pure logic --------------------------------------------------------------------------------


def parse_system_info(text: str) -> dict[str, dict[str, str]]:
    """``llama_print_system_info()`` ("CUDA : ARCHS = 870 | ... | CPU : AVX2 = 1 | ...") by backend."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for part in (p.strip() for p in text.split("|")):
        if not part:
            continue
        if ":" in part and "=" in part.split(":", 1)[1]:  # "CPU : SSE3 = 1" opens a section
            name, part = (s.strip() for s in part.split(":", 1))
            current = sections.setdefault(name, {})
        key, _, value = part.partition("=")
        if current is not None:
            current[key.strip()] = value.strip()
    return sections


def parse_l4t_release(text: str) -> str:
    """``# R36 (release), REVISION: 4.0, ...`` (/etc/nv_tegra_release) as "R36.4.0"; "" if unrecognised."""
    match = re.search(r"\b(R\d+)\b.*?REVISION:\s*([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else ""


def gpu_present(facts: Facts) -> bool:
    return bool(
        facts.cuda.devices or facts.telemetry_gpus or any(d.type in ("gpu", "igpu") for d in facts.llama.devices)
    )


def llama_gpu_backends(llama: LlamaFacts) -> tuple[str, ...]:
    return tuple(b for b in llama.backends if b not in _CPU_BACKENDS)


def diagnose(facts: Facts, config: AgentConfig) -> tuple[Finding, ...]:
    """What the box can do against what ``config`` asks for, most basic first."""
    findings = [_python(facts), _federated(facts, config), _gpu(facts)]
    if facts.jetson is not None:
        findings.extend(_jetson(facts.jetson))
    findings.append(_llama(facts, config))
    findings.extend(_cuda_archs(facts))
    findings.append(_onnxruntime(facts, config))
    findings.append(
        Finding("memory", OK, f"{_gib(facts.memory_available_bytes)} available of {_gib(facts.memory_total_bytes)}")
    )
    findings.append(_model(facts, config))
    findings.append(_disk(facts))
    return tuple(findings)


def asks(config: AgentConfig, config_file: str | None) -> dict:
    """The parts of the config that decide what hardware the agent uses."""
    return {
        "config_file": config_file or "",
        "model": config.model.path or config.model.name,
        "n_gpu_layers": config.model.n_gpu_layers,
        "n_ctx": config.model.n_ctx,
        "n_parallel": config.model.n_parallel,
        "embeddings_engine": config.embeddings.engine,
        "onnx_model": config.embeddings.onnx_model,
        "classifier_model": config.policy.classifier_model,
        "federated": config.federated.enabled,
    }


def _python(facts: Facts) -> Finding:
    return Finding(
        "python", OK, f"Python {facts.python_version} on {facts.platform} ({facts.machine}, {facts.cpu_count} CPUs)"
    )


def _federated(facts: Facts, config: AgentConfig) -> Finding:
    """Whether this box can take part in federated learning and, when not, the exact steps. A box that
    cannot is a WARN only when the config asks for it: the agent serves either way."""
    enabled = config.federated.enabled
    node = facts.supernode
    if not node.able:
        status = WARN if enabled else INFO
        asked = "federated.enabled = true, but this box cannot take part" if enabled else "this box cannot take part"
        return Finding("federated", status, f"{asked}: {node.summary()}")
    where = node.summary()
    if facts.superlink_problem:
        return Finding("federated", WARN if enabled else INFO, f"{where}, but {facts.superlink_problem}")
    if not enabled:
        return Finding("federated", INFO, f"{where}: this box can take part (set [federated] enabled = true)")
    return Finding("federated", OK, f"{where}: takes part in central's runs")


def _gpu(facts: Facts) -> Finding:
    nodes = facts.device_nodes
    if not gpu_present(facts):
        cuda = facts.cuda
        why = [
            f"no CUDA device ({cuda.error})" if cuda.library else "no CUDA driver (libcuda.so.1 not found)",
            f"NVIDIA device nodes {', '.join(n.path for n in nodes)}"
            if nodes
            else "no NVIDIA device nodes (/dev/nvidia*)",
            f"nvidia-smi at {facts.nvidia_smi}" if facts.nvidia_smi else "no nvidia-smi",
        ]
        gpu_backends = llama_gpu_backends(facts.llama)
        why.append(
            f"llama.cpp built for {', '.join(gpu_backends)} but sees no GPU"
            if gpu_backends
            else "llama.cpp built for CPU only"
        )
        # Device nodes or nvidia-smi without a device: a driver that is half there, not a CPU-only box.
        status = WARN if nodes or facts.nvidia_smi else INFO
        hint = "; NVIDIA's files are here but no driver sees a device: check the driver" if status == WARN else ""
        return Finding("gpu", status, "no GPU: " + ", ".join(why) + hint)
    driver = f"CUDA driver {facts.cuda.driver_version}, " if facts.cuda.driver_version else ""
    message = f"{driver}{', '.join(_gpu_names(facts))}"
    blocked = [n.path for n in nodes if not n.accessible]
    if blocked:
        return Finding(
            "gpu",
            WARN,
            f"{message}; this user cannot open {', '.join(blocked)}: add it to the "
            "video group (the systemd unit needs its GPU drop-in, packaging/systemd/)",
        )
    return Finding("gpu", OK, message)


def _gpu_names(facts: Facts) -> list[str]:
    devices = facts.cuda.devices or facts.telemetry_gpus
    if devices:
        shared = facts.jetson is not None
        return [
            f"{d.name} ({_gib(d.memory_total_bytes)}{', shared with the CPU' if shared else ''}"
            f"{', sm_' + d.compute_capability.replace('.', '') if d.compute_capability else ''})"
            for d in devices
        ]
    return [f"{d.name}: {d.description}" for d in facts.llama.devices if d.type in ("gpu", "igpu")]


def _jetson(jetson: JetsonFacts) -> list[Finding]:
    release = jetson.l4t_release or "unknown L4T release"
    jetpack = _JETPACK.get(release.split(".")[0], "")
    what = f"{jetson.model or 'NVIDIA Jetson'}, L4T {release}{f' ({jetpack})' if jetpack else ''}"
    findings = [
        Finding(
            "jetson",
            OK if jetpack == "JetPack 6" else WARN,
            what
            if jetpack == "JetPack 6"
            else f"{what}: packaging/jetson/README.md is for JetPack 6 (L4T R36, Python 3.10, CUDA 12)",
        )
    ]
    if jetson.tegrastats:
        findings.append(
            Finding("tegrastats", OK, f"{jetson.tegrastats}: heartbeats carry the GPU's load, memory and temperatures")
        )
    else:
        findings.append(
            Finding(
                "tegrastats",
                WARN,
                "tegrastats is not on PATH (L4T puts it in /usr/bin): heartbeats carry no GPU figures",
            )
        )
    return findings


def _llama(facts: Facts, config: AgentConfig) -> Finding:
    llama, layers = facts.llama, config.model.n_gpu_layers
    if not llama.version:
        return Finding("llama.cpp", FAIL, f"llama-cpp-python cannot be imported ({llama.error}): nothing can serve")
    asked = f"model.n_gpu_layers = {layers}"
    backends = ", ".join(llama.backends) or "unknown"
    features = [k for k, v in parse_system_info(llama.system_info).get("CPU", {}).items() if v == "1"]
    build = f"llama-cpp-python {llama.version}, ggml backends {backends}" + (
        f", CPU features {' '.join(features)}" if features else ""
    )
    gpu_backends = llama_gpu_backends(llama)
    offload_to = [f"{d.name} ({d.description})" for d in llama.devices if d.type in ("gpu", "igpu")]
    if layers != 0 and not llama.gpu_offload:
        if not gpu_backends:
            return Finding(
                "llama.cpp",
                WARN,
                f"{asked}, but this llama-cpp-python build has no GPU offload "
                f"({build}): every layer runs on the CPU. Rebuild it with "
                'CMAKE_ARGS="-DGGML_CUDA=on" (packaging/jetson/README.md) '
                "or set model.n_gpu_layers = 0",
            )
        return Finding(
            "llama.cpp",
            WARN,
            f"{asked}, and llama.cpp is built for {', '.join(gpu_backends)}, but it "
            f"sees no GPU ({build}): every layer runs on the CPU",
        )
    if layers != 0:
        how_many = "all layers" if layers == -1 else f"{layers} layers"
        where = ", ".join(offload_to) or "the GPU"
        return Finding("llama.cpp", OK, f"{asked}: {how_many} offloaded to {where}; {build}")
    if llama.gpu_offload:
        return Finding(
            "llama.cpp",
            INFO,
            f"{asked}: every layer runs on the CPU although llama.cpp can offload to "
            f"{', '.join(offload_to) or 'a GPU'}; set model.n_gpu_layers = -1 to use "
            f"it; {build}",
        )
    if gpu_present(facts) and not gpu_backends:
        return Finding(
            "llama.cpp",
            INFO,
            f"{asked}: runs on the CPU; this box has a GPU but the llama-cpp-python "
            f"build is CPU only ({build}); see packaging/jetson/README.md to rebuild",
        )
    return Finding("llama.cpp", OK, f"{asked}: runs on the CPU; {build}")


def _cuda_archs(facts: Facts) -> list[Finding]:
    """A CUDA build whose every architecture is newer than the GPU cannot run a kernel on it."""
    archs = parse_system_info(facts.llama.system_info).get("CUDA", {}).get("ARCHS", "")
    built = [int(a) for a in re.findall(r"\d+", archs)]
    findings = []
    for device in facts.cuda.devices:
        if not built or not device.compute_capability:
            continue
        wanted = int(float(device.compute_capability) * 10 + 0.5) * 10  # "8.7" -> 870, as __CUDA_ARCH_LIST__
        if min(built) > wanted:
            findings.append(
                Finding(
                    "cuda archs",
                    WARN,
                    f"llama.cpp was built for CUDA architectures {archs}; "
                    f"{device.name} is sm_{wanted // 10}: rebuild with "
                    f"-DCMAKE_CUDA_ARCHITECTURES={wanted // 10}",
                )
            )
    return findings


def _onnxruntime(facts: Facts, config: AgentConfig) -> Finding:
    from edge_agent.engines.onnx import choose_providers

    onnx = facts.onnxruntime
    users = [
        u
        for u, wanted in (
            ("embeddings.engine = onnx", config.embeddings.engine == "onnx"),
            ("policy.classifier_model", bool(config.policy.classifier_model)),
        )
        if wanted
    ]
    if not onnx.version:
        if users:
            return Finding(
                "onnxruntime",
                FAIL,
                f"{' and '.join(users)} need onnxruntime, which is not installed "
                f"({onnx.error}): pip install 'edgefleet[cpu]' (or onnxruntime-gpu; "
                "on Jetson NVIDIA's wheel, packaging/jetson/README.md)",
            )
        return Finding(
            "onnxruntime", INFO, "not installed; only embeddings.engine = onnx and policy.classifier_model need it"
        )
    missing = [
        f"{key}: {path} is not a file"
        for key, path in (
            ("embeddings.onnx_model", config.embeddings.onnx_model if config.embeddings.engine == "onnx" else ""),
            (
                "embeddings.onnx_tokenizer",
                config.embeddings.onnx_tokenizer if config.embeddings.engine == "onnx" else "",
            ),
            ("policy.classifier_model", config.policy.classifier_model),
        )
        if path and not Path(path).is_file()
    ]
    chosen = choose_providers(onnx.providers) or ["no provider"]
    has = f"onnxruntime {onnx.version}, providers {', '.join(onnx.providers) or 'none'}"
    if missing:
        return Finding("onnxruntime", FAIL, f"{'; '.join(missing)} ({has})")
    gpu_providers = [p for p in onnx.providers if p in _GPU_PROVIDERS]
    if config.embeddings.engine == "onnx":
        if gpu_present(facts) and not gpu_providers:
            return Finding(
                "onnxruntime",
                WARN,
                f"embeddings.engine = onnx and this box has a GPU, but {has}: the "
                "encoder runs on the CPU; install onnxruntime-gpu (on Jetson "
                "NVIDIA's wheel, packaging/jetson/README.md)",
            )
        if gpu_providers and not gpu_present(facts):
            return Finding(
                "onnxruntime",
                WARN,
                f"embeddings.engine = onnx and {has}, but there is no GPU: onnxruntime falls back to {chosen[-1]}",
            )
        return Finding("onnxruntime", OK, f"embeddings.engine = onnx runs on {chosen[0]}; {has}")
    if users:
        return Finding("onnxruntime", OK, f"{' and '.join(users)} runs on {chosen[0]}; {has}")
    return Finding(
        "onnxruntime",
        INFO,
        f"{has}; not used (embeddings.engine = {config.embeddings.engine}, no policy.classifier_model)",
    )


def _model(facts: Facts, config: AgentConfig) -> Finding:
    model = facts.model
    if model.error:
        return Finding("model", FAIL, model.error)
    notes = ", assigned by central" if model.source == "fleet" else ""
    notes += "" if model.present else ", assembled into the data dir at the first serve"
    what = f"{model.name} ({_mib(model.size_bytes)}, {model.path}{notes})"
    if not model.present and model.size_bytes > facts.disk_free_bytes:
        return Finding(
            "model",
            FAIL,
            f"{what}: assembling it needs {_mib(model.size_bytes)} in the data dir, "
            f"which has {_mib(facts.disk_free_bytes)} free",
        )
    llama = facts.llama
    vram = [d for d in llama.devices if d.type == "gpu"]
    if config.model.n_gpu_layers == -1 and llama.gpu_offload and vram:
        free = sum(d.memory_free_bytes for d in vram)
        if model.size_bytes > free:
            return Finding(
                "model",
                FAIL,
                f"{what} does not fit in the {_gib(free)} free GPU memory, and "
                "model.n_gpu_layers = -1 puts every layer there: lower model.n_gpu_layers",
            )
        return Finding(
            "model",
            OK,
            f"{what} fits in {_gib(free)} free GPU memory (plus the KV cache for "
            f"n_ctx {config.model.n_ctx} x n_parallel {config.model.n_parallel})",
        )
    available = facts.memory_available_bytes
    if model.size_bytes > available:
        return Finding(
            "model",
            FAIL,
            f"{what} does not fit in the {_gib(available)} of memory available "
            f"(of {_gib(facts.memory_total_bytes)}): pick a smaller model or quantization",
        )
    if model.size_bytes > 0.8 * available:
        return Finding(
            "model",
            WARN,
            f"{what} leaves less than a fifth of the {_gib(available)} available for "
            f"the KV cache (n_ctx {config.model.n_ctx} x n_parallel "
            f"{config.model.n_parallel}) and everything else",
        )
    return Finding(
        "model",
        OK,
        f"{what} fits in {_gib(available)} available memory (plus the KV cache for "
        f"n_ctx {config.model.n_ctx} x n_parallel {config.model.n_parallel})",
    )


def _disk(facts: Facts) -> Finding:
    status = WARN if facts.disk_free_bytes < _DISK_LOW_BYTES else OK
    note = ": the cache, the audit and fleet model downloads need room" if status == WARN else ""
    return Finding(
        "disk",
        status,
        f"data dir {facts.data_dir}: {_gib(facts.disk_free_bytes)} free of {_gib(facts.disk_total_bytes)}{note}",
    )


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


def describe(report: Report) -> str:
    """The report for people: one line per finding, then the verdict."""
    f, a = report.facts, report.asks
    lines = [
        f"config:  {a['config_file'] or 'defaults (no --config)'}; data dir {f.data_dir}",
        f"asks:    model {a['model']}, model.n_gpu_layers = {a['n_gpu_layers']}, "
        f"embeddings.engine = {a['embeddings_engine']}",
        "",
    ]
    width = max(len(x.check) for x in report.findings)
    lines.extend(f"{x.status.upper():<5} {x.check:<{width}}  {x.message}" for x in report.findings)
    counts = {s: sum(1 for x in report.findings if x.status == s) for s in (FAIL, WARN)}
    lines.append("")
    if counts[FAIL]:
        lines.append(f"{counts[FAIL]} FAIL: the agent cannot run as configured on this box.")
    else:
        warned = f" ({counts[WARN]} WARN)" if counts[WARN] else ""
        on = "its GPU" if report.gpu_present and a["n_gpu_layers"] and f.llama.gpu_offload else "the CPU"
        lines.append(f"no FAIL{warned}: the agent can run as configured on this box, on {on}.")
    return "\n".join(lines)


# -- probes: thin, each degrades to "absent" and never raises ----------------------------------


def run(config: AgentConfig, config_file: str | None = None) -> Report:
    facts = gather(config)
    return Report(facts, asks(config, config_file), diagnose(facts, config))


def gather(config: AgentConfig) -> Facts:
    from edge_agent.control.identity import FleetFiles
    from edge_agent.control.telemetry import SystemProbe, _existing_ancestor
    from federated import supernode_runtime

    data_dir = config.data_path
    sample = SystemProbe(data_dir).sample()
    disk = psutil.disk_usage(str(_existing_ancestor(data_dir)))
    return Facts(
        python_version=platform.python_version(),
        platform=f"{platform.system()} {platform.release()}",
        machine=platform.machine(),
        cpu_count=sample.cpu_count,
        memory_total_bytes=sample.memory_total_bytes,
        memory_available_bytes=sample.memory_total_bytes - sample.memory_used_bytes,
        data_dir=str(data_dir),
        disk_free_bytes=int(disk.free),
        disk_total_bytes=int(disk.total),
        cuda=probe_cuda_driver(),
        telemetry_gpus=tuple(
            GpuDevice(g.name, g.memory_total_bytes, g.memory_total_bytes - g.memory_used_bytes, source=g.source)
            for g in sample.gpus
        ),
        device_nodes=probe_device_nodes(),
        nvidia_smi=shutil.which("nvidia-smi") or "",
        jetson=probe_jetson(),
        onnxruntime=probe_onnxruntime(),
        llama=probe_llama(),
        model=probe_model(config, data_dir),
        supernode=supernode_runtime.resolve(config.federated.python),
        superlink_problem=FleetFiles(data_dir).superlink_problem(),
    )


def probe_cuda_driver() -> CudaFacts:
    """Devices as the CUDA driver API sees them: libcuda is on discrete-GPU hosts and on Jetson alike."""
    loaded = _load_libcuda()
    if loaded is None:
        return CudaFacts(error="libcuda.so.1 not found")
    library, lib = loaded
    try:
        version = ctypes.c_int(0)
        lib.cuDriverGetVersion(ctypes.byref(version))
        driver = f"{version.value // 1000}.{version.value % 1000 // 10}" if version.value else ""
        rc = lib.cuInit(0)
        if rc != 0:
            return CudaFacts(library, driver, error=f"cuInit failed: {_cuda_error(lib, rc)}")
        count = ctypes.c_int(0)
        rc = lib.cuDeviceGetCount(ctypes.byref(count))
        if rc != 0:
            return CudaFacts(library, driver, error=f"cuDeviceGetCount failed: {_cuda_error(lib, rc)}")
        devices = []
        for index in range(count.value):
            device, total = ctypes.c_int(0), ctypes.c_size_t(0)
            major, minor = ctypes.c_int(0), ctypes.c_int(0)
            name = ctypes.create_string_buffer(256)
            lib.cuDeviceGet(ctypes.byref(device), index)
            lib.cuDeviceGetName(name, 256, device)
            lib.cuDeviceTotalMem_v2(ctypes.byref(total), device)
            lib.cuDeviceGetAttribute(ctypes.byref(major), 75, device)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
            lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)  # ..._MINOR
            devices.append(
                GpuDevice(
                    name.value.decode(errors="replace"),
                    int(total.value),
                    compute_capability=f"{major.value}.{minor.value}",
                    source="cuda",
                )
            )
        return CudaFacts(library, driver, tuple(devices), "" if devices else "the CUDA driver reports 0 devices")
    except (AttributeError, OSError) as exc:  # an old or broken libcuda without these symbols
        return CudaFacts(library, error=f"{library} unusable: {exc}")


def _load_libcuda() -> tuple[str, ctypes.CDLL] | None:
    """(the name that loaded, the library), or None where no CUDA driver library loads."""
    for library in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            return library, ctypes.CDLL(library)
        except OSError:
            continue
    return None


def _cuda_error(lib, rc: int) -> str:
    name = ctypes.c_char_p()
    try:
        if lib.cuGetErrorName(rc, ctypes.byref(name)) == 0 and name.value:
            return f"{name.value.decode()} ({rc})"
    except AttributeError:
        pass
    return f"error {rc}"


def probe_device_nodes() -> tuple[DeviceNode, ...]:
    """NVIDIA's nodes: /dev/nvidia* on discrete GPUs; nvmap and the nvgpu/nvhost GPU nodes on Jetson."""
    paths = sorted(glob.glob("/dev/nvidia*")) + [
        p for p in ("/dev/nvmap", "/dev/nvgpu/igpu0/ctrl", "/dev/nvhost-ctrl-gpu") if os.path.exists(p)
    ]
    return tuple(DeviceNode(p, os.access(p, os.R_OK | os.W_OK)) for p in paths if not os.path.isdir(p))


def probe_jetson() -> JetsonFacts | None:
    release = _read("/etc/nv_tegra_release")
    model = _read("/proc/device-tree/model").replace("\x00", "").strip()
    if not release and "jetson" not in model.lower():
        return None
    return JetsonFacts(
        model,
        parse_l4t_release(release),
        shutil.which("tegrastats") or "",
        shutil.which("jtop") or "",
        shutil.which("nvpmodel") or "",
    )


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def probe_onnxruntime() -> OnnxFacts:
    try:
        import onnxruntime
    except ImportError as exc:
        return OnnxFacts(error=str(exc))
    return OnnxFacts(onnxruntime.__version__, tuple(onnxruntime.get_available_providers()))


def probe_llama() -> LlamaFacts:
    try:
        import llama_cpp
    except Exception as exc:  # noqa: BLE001 - ImportError, or OSError from a broken shared library
        return LlamaFacts(error=str(exc))
    info = llama_cpp.llama_print_system_info()
    info = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
    offload = bool(llama_cpp.llama_supports_gpu_offload())
    backends, devices = _ggml_backends()
    if not backends:  # the registry could not be read: the system info names the backends with features
        backends = tuple(parse_system_info(info))
    return LlamaFacts(llama_cpp.__version__, offload, backends, devices, info.strip())


def _ggml_backends() -> tuple[tuple[str, ...], tuple[LlamaDevice, ...]]:
    """ggml's backend registry and devices, read from the libggml that llama-cpp-python loaded.

    llama-cpp-python does not bind these functions; a private handle with our own prototypes keeps
    them off its shared library object. Any failure gives ((), ()).
    """
    try:
        from llama_cpp import _ggml

        g = ctypes.CDLL(_ggml.libggml._name)
        vp, sz, s = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
        for fn, restype, argtypes in (
            ("ggml_backend_reg_count", sz, []),
            ("ggml_backend_reg_get", vp, [sz]),
            ("ggml_backend_reg_name", s, [vp]),
            ("ggml_backend_dev_count", sz, []),
            ("ggml_backend_dev_get", vp, [sz]),
            ("ggml_backend_dev_name", s, [vp]),
            ("ggml_backend_dev_description", s, [vp]),
            ("ggml_backend_dev_type", ctypes.c_int, [vp]),
            ("ggml_backend_dev_memory", None, [vp, ctypes.POINTER(sz), ctypes.POINTER(sz)]),
        ):
            getattr(g, fn).restype, getattr(g, fn).argtypes = restype, argtypes
        backends = tuple(
            g.ggml_backend_reg_name(g.ggml_backend_reg_get(i)).decode() for i in range(g.ggml_backend_reg_count())
        )
        devices = []
        for i in range(g.ggml_backend_dev_count()):
            dev, free, total = g.ggml_backend_dev_get(i), ctypes.c_size_t(0), ctypes.c_size_t(0)
            g.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
            devices.append(
                LlamaDevice(
                    (g.ggml_backend_dev_name(dev) or b"").decode(errors="replace"),
                    (g.ggml_backend_dev_description(dev) or b"").decode(errors="replace"),
                    _DEVICE_TYPES.get(g.ggml_backend_dev_type(dev), "unknown"),
                    int(free.value),
                    int(total.value),
                )
            )
        return backends, tuple(devices)
    except Exception as exc:  # noqa: BLE001 - a different llama-cpp-python layout or libggml ABI
        log.debug("ggml backend registry unreadable: %s", exc)
        return (), ()


def probe_model(config: AgentConfig, data_dir: Path) -> ModelFacts:
    """The model ``serve`` would load, located without hashing or assembling anything."""
    from edge_agent import models

    fleet = _fleet_model(config, data_dir)
    if fleet is not None:
        return fleet
    m = config.model
    try:
        if m.path:
            path = Path(m.path).expanduser()
            if not path.is_file():
                return ModelFacts(path.stem, str(path), source="config", error=f"model.path: {path} is not a file")
            return ModelFacts(path.stem, str(path), path.stat().st_size, "config", True)
        if m.name == "gemma-3-270m":
            target = data_dir / "models" / models._GEMMA_FILE
            if target.is_file():
                return ModelFacts(m.name, str(target), target.stat().st_size, "config", True)
            size = sum(p.stat().st_size for p in models._gemma_chunks())
            return ModelFacts(m.name, str(target), size, "config", False)
        if m.name in models.BUILTIN_MODELS:
            path = models._distribution_file(models.BUILTIN_MODELS[m.name].distribution, ".gguf")
            return ModelFacts(m.name, str(path), path.stat().st_size, "config", True)
        return ModelFacts(
            m.name,
            source="config",
            error=f"model.name: unknown model {m.name!r} (built-in: {', '.join(models.BUILTIN_MODELS)})",
        )
    except (models.ModelError, OSError) as exc:
        return ModelFacts(m.name, source="config", error=str(exc))


def _fleet_model(config: AgentConfig, data_dir: Path) -> ModelFacts | None:
    """The version central assigned, when the daemon would serve it instead of the config's model."""
    from edge_agent.control.artifacts import ModelSlots
    from edge_agent.control.identity import FleetFiles
    from edge_agent.control.trust_state import TrustFiles

    files = FleetFiles(data_dir)
    if not config.fleet.enabled or not files.enrolled():
        return None
    try:
        installed = ModelSlots(data_dir, TrustFiles(files.root).signing_keys).active()
    except Exception as exc:  # noqa: BLE001 - an unreadable enrollment: the config's model is what serves
        log.debug("fleet model slots unreadable: %s", exc)
        return None
    if installed is None:
        return None
    return ModelFacts(installed.manifest.ref, str(installed.path), installed.manifest.size, "fleet", True)
