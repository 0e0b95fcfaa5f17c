"""`edge-agent doctor`: the pure findings for every combination of facts, and real runs on this machine.

This machine has no GPU and is not a Jetson, so GPUs and Jetson sensors appear here only as fakes:
facts built by the functions and constants named ``fake_*`` / ``FAKE_*`` below, standing in for what
the probes would gather on such hardware. Everything about this machine is probed for real.
"""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent import doctor
from edge_agent.config import AgentConfig, EmbeddingsConfig, FederatedConfig, ModelConfig
from edge_agent.doctor import (
    FAIL,
    INFO,
    OK,
    WARN,
    CudaFacts,
    DeviceNode,
    Facts,
    GpuDevice,
    JetsonFacts,
    LlamaDevice,
    LlamaFacts,
    ModelFacts,
    OnnxFacts,
    Report,
    diagnose,
    parse_l4t_release,
    parse_system_info,
)
from federated import supernode_runtime

ROOT = Path(__file__).resolve().parents[3]
GiB = 1 << 30
MiB = 1 << 20

CPU_SYSTEM_INFO = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | OPENMP = 1 | "
CPU_DEVICE = LlamaDevice("CPU", "AMD EPYC", "cpu", 20 * GiB, 24 * GiB)

# Fakes: a discrete NVIDIA GPU and a CUDA build of llama-cpp-python, which this machine does not have.
FAKE_H100 = GpuDevice("NVIDIA H100 80GB HBM3", 80 * GiB, compute_capability="9.0", source="cuda")
FAKE_CUDA_SYSTEM_INFO = "CUDA : ARCHS = 900 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | " + CPU_SYSTEM_INFO
FAKE_H100_LLAMA_DEVICE = LlamaDevice("CUDA0", "NVIDIA H100 80GB HBM3", "gpu", 79 * GiB, 80 * GiB)
# Fakes: what an AGX Orin on JetPack 6 shows (its release file, device-tree model, CUDA's "Orin" iGPU).
FAKE_NV_TEGRA_RELEASE = (
    "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024"
)
FAKE_ORIN = GpuDevice("Orin", 30 * GiB, compute_capability="8.7", source="cuda")
FAKE_ORIN_SYSTEM_INFO = (
    "CUDA : ARCHS = 870 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | CPU : NEON = 1 | "
    "ARM_FMA = 1 | FP16_VA = 1 | DOTPROD = 1 | OPENMP = 1 | REPACK = 1 | "
)


def cpu_box(**changes) -> Facts:
    """A CPU-only x86_64 box like this one, with a small model: the base the cases below change."""
    facts = Facts(
        python_version="3.10.12",
        platform="Linux 6.8.0",
        machine="x86_64",
        cpu_count=2,
        memory_total_bytes=24 * GiB,
        memory_available_bytes=20 * GiB,
        data_dir="/var/lib/edgefleet",
        disk_free_bytes=50 * GiB,
        disk_total_bytes=100 * GiB,
        cuda=CudaFacts(error="libcuda.so.1 not found"),
        telemetry_gpus=(),
        device_nodes=(),
        nvidia_smi="",
        jetson=None,
        onnxruntime=OnnxFacts("1.20.0", ("CPUExecutionProvider",)),
        llama=LlamaFacts("0.3.36", False, ("CPU",), (CPU_DEVICE,), CPU_SYSTEM_INFO),
        model=ModelFacts("smollm2-135m-instruct", "/models/smollm2.gguf", 94 * MiB, "config", True),
    )
    return dataclasses.replace(facts, **changes)


def fake_h100_box(**changes) -> Facts:
    """Fake: a box with one H100, its driver, and llama-cpp-python built with -DGGML_CUDA=on."""
    return cpu_box(
        **{
            **dict(
                cuda=CudaFacts("libcuda.so.1", "12.4", (FAKE_H100,)),
                telemetry_gpus=(GpuDevice("NVIDIA H100 80GB HBM3", 80 * GiB, 79 * GiB, source="nvml"),),
                device_nodes=(DeviceNode("/dev/nvidia0", True), DeviceNode("/dev/nvidiactl", True)),
                nvidia_smi="/usr/bin/nvidia-smi",
                llama=LlamaFacts(
                    "0.3.36", True, ("CUDA", "CPU"), (FAKE_H100_LLAMA_DEVICE, CPU_DEVICE), FAKE_CUDA_SYSTEM_INFO
                ),
            ),
            **changes,
        }
    )


def fake_orin_box(**changes) -> Facts:
    """Fake: a Jetson AGX Orin on JetPack 6 with tegrastats and a CUDA (sm_87) llama-cpp-python."""
    return cpu_box(
        **{
            **dict(
                python_version="3.10.12",
                machine="aarch64",
                memory_total_bytes=30 * GiB,
                memory_available_bytes=26 * GiB,
                cuda=CudaFacts("libcuda.so.1", "12.6", (FAKE_ORIN,)),
                telemetry_gpus=(GpuDevice("jetson-gpu", 30 * GiB, 26 * GiB, source="tegrastats"),),
                device_nodes=(DeviceNode("/dev/nvgpu/igpu0/ctrl", True), DeviceNode("/dev/nvmap", True)),
                jetson=JetsonFacts(
                    "NVIDIA Jetson AGX Orin Developer Kit",
                    parse_l4t_release(FAKE_NV_TEGRA_RELEASE),
                    "/usr/bin/tegrastats",
                    "/usr/local/bin/jtop",
                    "/usr/sbin/nvpmodel",
                ),
                llama=LlamaFacts(
                    "0.3.36",
                    True,
                    ("CUDA", "CPU"),
                    (LlamaDevice("CUDA0", "Orin", "igpu", 26 * GiB, 30 * GiB),),
                    FAKE_ORIN_SYSTEM_INFO,
                ),
            ),
            **changes,
        }
    )


def config(n_gpu_layers=0, **sections) -> AgentConfig:
    return AgentConfig(model=ModelConfig(n_gpu_layers=n_gpu_layers), **sections)


def finding(findings, check):
    return next(f for f in findings if f.check == check)


def exit_code(facts, cfg):
    return Report(facts, doctor.asks(cfg, None), diagnose(facts, cfg)).exit_code


def test_no_gpu_and_none_asked_for_is_information():
    facts, cfg = cpu_box(), config(n_gpu_layers=0)
    findings = diagnose(facts, cfg)
    gpu = finding(findings, "gpu")
    assert gpu.status == INFO
    assert gpu.message.startswith("no GPU: no CUDA driver (libcuda.so.1 not found)")
    assert "no NVIDIA device nodes" in gpu.message and "llama.cpp built for CPU only" in gpu.message
    assert finding(findings, "llama.cpp").status == OK
    assert not [f for f in findings if f.status in (WARN, FAIL)]
    assert exit_code(facts, cfg) == 0


def test_no_gpu_but_all_layers_asked_for_warns():
    facts, cfg = cpu_box(), config(n_gpu_layers=-1)
    llama = finding(diagnose(facts, cfg), "llama.cpp")
    assert llama.status == WARN
    assert "model.n_gpu_layers = -1, but this llama-cpp-python build has no GPU offload" in llama.message
    assert "every layer runs on the CPU" in llama.message and "-DGGML_CUDA=on" in llama.message
    assert exit_code(facts, cfg) == 0  # llama.cpp serves on the CPU: a warning, not a failure


def test_cuda_build_without_a_visible_gpu_says_so():
    facts = cpu_box(llama=LlamaFacts("0.3.36", False, ("CUDA", "CPU"), (CPU_DEVICE,), FAKE_CUDA_SYSTEM_INFO))
    findings = diagnose(facts, config(n_gpu_layers=-1))
    assert "built for CUDA, but it sees no GPU" in finding(findings, "llama.cpp").message
    assert "llama.cpp built for CUDA but sees no GPU" in finding(findings, "gpu").message


def test_device_nodes_without_a_cuda_device_warn():
    facts = cpu_box(
        device_nodes=(DeviceNode("/dev/nvidiactl", True),),
        nvidia_smi="/usr/bin/nvidia-smi",
        cuda=CudaFacts("libcuda.so.1", "12.4", (), "cuInit failed: CUDA_ERROR_NO_DEVICE (100)"),
    )
    gpu = finding(diagnose(facts, config()), "gpu")
    assert gpu.status == WARN
    assert "no CUDA device (cuInit failed: CUDA_ERROR_NO_DEVICE (100))" in gpu.message
    assert "/dev/nvidiactl" in gpu.message and "check the driver" in gpu.message


def test_cuda_device_and_gpu_build_offloading_is_ok():
    facts, cfg = fake_h100_box(), config(n_gpu_layers=-1)
    findings = diagnose(facts, cfg)
    assert finding(findings, "gpu") == doctor.Finding(
        "gpu", OK, "CUDA driver 12.4, NVIDIA H100 80GB HBM3 (80.0 GiB, sm_90)"
    )
    llama = finding(findings, "llama.cpp")
    assert llama.status == OK and "all layers offloaded to CUDA0 (NVIDIA H100 80GB HBM3)" in llama.message
    assert finding(findings, "model").status == OK and "free GPU memory" in finding(findings, "model").message
    assert exit_code(facts, cfg) == 0


def test_gpu_left_unused_is_pointed_out():
    llama = finding(diagnose(fake_h100_box(), config(n_gpu_layers=0)), "llama.cpp")
    assert llama.status == INFO and "set model.n_gpu_layers = -1" in llama.message


def test_gpu_with_a_cpu_only_build():
    facts = fake_h100_box(llama=cpu_box().llama)
    assert "build is CPU only" in finding(diagnose(facts, config(n_gpu_layers=0)), "llama.cpp").message
    assert finding(diagnose(facts, config(n_gpu_layers=-1)), "llama.cpp").status == WARN


def test_gpu_nodes_this_user_cannot_open_warn():
    facts = fake_h100_box(device_nodes=(DeviceNode("/dev/nvidia0", False), DeviceNode("/dev/nvidiactl", True)))
    gpu = finding(diagnose(facts, config(-1)), "gpu")
    assert gpu.status == WARN and "cannot open /dev/nvidia0" in gpu.message and "packaging/systemd/" in gpu.message


def test_cuda_build_for_newer_architectures_only_warns():
    facts = fake_orin_box(llama=dataclasses.replace(fake_orin_box().llama, system_info=FAKE_CUDA_SYSTEM_INFO))
    archs = finding(diagnose(facts, config(-1)), "cuda archs")
    assert archs.status == WARN and "Orin is sm_87" in archs.message
    assert "-DCMAKE_CUDA_ARCHITECTURES=87" in archs.message
    assert not [f for f in diagnose(fake_orin_box(), config(-1)) if f.check == "cuda archs"]


@pytest.fixture
def onnx_files(tmp_path):
    (tmp_path / "encoder.onnx").write_bytes(b"x")
    (tmp_path / "tokenizer.json").write_text("{}")
    return EmbeddingsConfig("onnx", str(tmp_path / "encoder.onnx"), str(tmp_path / "tokenizer.json"))


def test_onnx_engine_with_a_gpu_but_no_cuda_provider_warns(onnx_files):
    onnx = finding(diagnose(fake_h100_box(), config(embeddings=onnx_files)), "onnxruntime")
    assert onnx.status == WARN and "install onnxruntime-gpu" in onnx.message


def test_onnx_engine_with_cuda_provider_and_gpu_is_ok(onnx_files):
    facts = fake_h100_box(
        onnxruntime=OnnxFacts("1.20.0", ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"))
    )
    onnx = finding(diagnose(facts, config(embeddings=onnx_files)), "onnxruntime")
    assert onnx == doctor.Finding(
        "onnxruntime",
        OK,
        "embeddings.engine = onnx runs on TensorrtExecutionProvider; "
        "onnxruntime 1.20.0, providers TensorrtExecutionProvider, CUDAExecutionProvider, "
        "CPUExecutionProvider",
    )


def test_onnx_engine_on_a_cpu_box_is_ok_and_gpu_build_without_gpu_warns(onnx_files):
    assert finding(diagnose(cpu_box(), config(embeddings=onnx_files)), "onnxruntime").status == OK
    gpu_build = cpu_box(onnxruntime=OnnxFacts("1.20.0", ("CUDAExecutionProvider", "CPUExecutionProvider")))
    onnx = finding(diagnose(gpu_build, config(embeddings=onnx_files)), "onnxruntime")
    assert onnx.status == WARN and "falls back to CPUExecutionProvider" in onnx.message


def test_onnx_engine_without_onnxruntime_or_its_files_fails(onnx_files, tmp_path):
    missing = cpu_box(onnxruntime=OnnxFacts(error="No module named 'onnxruntime'"))
    onnx = finding(diagnose(missing, config(embeddings=onnx_files)), "onnxruntime")
    assert onnx.status == FAIL and "embeddings.engine = onnx need onnxruntime" in onnx.message
    assert exit_code(missing, config(embeddings=onnx_files)) == 1
    # Not asked for: its absence is only information.
    assert finding(diagnose(missing, config()), "onnxruntime").status == INFO
    gone = dataclasses.replace(onnx_files, onnx_model=str(tmp_path / "gone.onnx"))
    onnx = finding(diagnose(cpu_box(), config(embeddings=gone)), "onnxruntime")
    assert onnx.status == FAIL and f"embeddings.onnx_model: {tmp_path / 'gone.onnx'} is not a file" in onnx.message


def test_model_too_big_for_memory_fails():
    facts, cfg = cpu_box(model=ModelFacts("big", "/models/big.gguf", 22 * GiB, "config", True)), config()
    model = finding(diagnose(facts, cfg), "model")
    assert model.status == FAIL and "does not fit in the 20.0 GiB of memory available" in model.message
    assert exit_code(facts, cfg) == 1


def test_model_that_barely_fits_warns():
    facts = cpu_box(model=ModelFacts("big", "/models/big.gguf", 17 * GiB, "config", True))
    assert finding(diagnose(facts, config()), "model").status == WARN


def test_model_too_big_for_gpu_memory_with_full_offload_fails():
    facts = fake_h100_box(
        model=ModelFacts("huge", "/models/huge.gguf", 90 * GiB, "config", True), memory_available_bytes=200 * GiB
    )
    model = finding(diagnose(facts, config(-1)), "model")
    assert model.status == FAIL and "lower model.n_gpu_layers" in model.message
    # Partly offloaded, the GPU memory is not the limit the doctor can judge; system memory is.
    assert finding(diagnose(facts, config(20)), "model").status == OK


def test_missing_model_fails_and_unassembled_builtin_is_measured():
    missing = cpu_box(
        model=ModelFacts("x", "/nope.gguf", source="config", error="model.path: /nope.gguf is not a file")
    )
    assert finding(diagnose(missing, config()), "model") == doctor.Finding(
        "model", FAIL, "model.path: /nope.gguf is not a file"
    )
    pending = ModelFacts("gemma-3-270m", "/d/models/gemma.gguf", 241 * MiB, "config", False)
    assert "assembled into the data dir" in finding(diagnose(cpu_box(model=pending), config()), "model").message
    no_room = cpu_box(model=pending, disk_free_bytes=100 * MiB)
    assert finding(diagnose(no_room, config()), "model").status == FAIL


def test_low_disk_warns():
    assert finding(diagnose(cpu_box(disk_free_bytes=200 * MiB), config()), "disk").status == WARN


def test_jetson_orin_on_jetpack_6():
    facts, cfg = fake_orin_box(), config(n_gpu_layers=-1)
    findings = diagnose(facts, cfg)
    assert finding(findings, "jetson") == doctor.Finding(
        "jetson", OK, "NVIDIA Jetson AGX Orin Developer Kit, L4T R36.4.0 (JetPack 6)"
    )
    assert finding(findings, "tegrastats").status == OK
    assert finding(findings, "gpu").message == "CUDA driver 12.6, Orin (30.0 GiB, shared with the CPU, sm_87)"
    assert "offloaded to CUDA0 (Orin)" in finding(findings, "llama.cpp").message
    # An iGPU shares the system memory: the model is judged against that.
    assert "available memory" in finding(findings, "model").message
    assert exit_code(facts, cfg) == 0


def test_jetson_without_tegrastats_or_on_jetpack_5_warns():
    no_tegrastats = fake_orin_box(jetson=dataclasses.replace(fake_orin_box().jetson, tegrastats=""))
    assert finding(diagnose(no_tegrastats, config(-1)), "tegrastats").status == WARN
    jetpack5 = fake_orin_box(jetson=dataclasses.replace(fake_orin_box().jetson, l4t_release="R35.4.1"))
    jetson = finding(diagnose(jetpack5, config(-1)), "jetson")
    assert jetson.status == WARN and "(JetPack 5)" in jetson.message


JETPACK_STEPS = supernode_runtime.choose(
    "",
    supernode_runtime.PythonProbe("/opt/edgefleet/venv/bin/python", version=(3, 10, 12), supernode=True),
    None,
    "",
    Path("/opt/edgefleet/venv"),
)
ON_311 = supernode_runtime.Participation(True, "/opt/edgefleet/venv/supernode/bin/python", "3.11.9")


def test_federated_on_python_3_10_without_a_supernode_venv_warns_with_the_steps():
    box = cpu_box(supernode=JETPACK_STEPS)
    found = finding(diagnose(box, config(federated=FederatedConfig(enabled=True))), "federated")
    assert found.status == WARN
    assert found.message.startswith(
        "federated.enabled = true, but this box cannot take part: the agent runs on Python 3.10.12"
    )
    assert (
        "(1) install a Python 3.11+" in found.message and "supernode-venv --python /usr/bin/python3.11" in found.message
    )
    # Not asked for: said as information, with the same steps; the python finding itself is fine.
    quiet = diagnose(box, config())
    assert (
        finding(quiet, "federated").status == INFO
        and "this box cannot take part" in finding(quiet, "federated").message
    )
    assert finding(quiet, "python").status == OK


def test_federated_on_python_3_10_with_its_supernode_venv_is_ok():
    found = finding(diagnose(cpu_box(supernode=ON_311), config(federated=FederatedConfig(enabled=True))), "federated")
    assert found.status == OK
    assert (
        found.message
        == "SuperNode on Python 3.11.9 (/opt/edgefleet/venv/supernode/bin/python)" + ": takes part in central's runs"
    )
    able_but_off = finding(diagnose(cpu_box(supernode=ON_311), config()), "federated")
    assert able_but_off.status == INFO and "set [federated] enabled = true" in able_but_off.message


def test_federated_without_an_enrollment_with_a_superlink_says_what_is_missing():
    box = cpu_box(supernode=ON_311, superlink_problem="this data dir is not enrolled: run `edge-agent enroll`")
    found = finding(diagnose(box, config(federated=FederatedConfig(enabled=True))), "federated")
    assert found.status == WARN and found.message.endswith("but this data dir is not enrolled: run `edge-agent enroll`")


def test_parsers():
    assert parse_l4t_release(FAKE_NV_TEGRA_RELEASE) == "R36.4.0"
    assert parse_l4t_release("not a release file") == ""
    info = parse_system_info(FAKE_CUDA_SYSTEM_INFO)
    assert list(info) == ["CUDA", "CPU"]
    assert info["CUDA"]["ARCHS"] == "900" and info["CPU"]["AVX2"] == "1"


def test_describe_and_json():
    facts, cfg = cpu_box(model=ModelFacts("big", "/models/big.gguf", 22 * GiB, "config", True)), config(-1)
    report = Report(facts, doctor.asks(cfg, "/etc/edgefleet/agent.toml"), diagnose(facts, cfg))
    text = doctor.describe(report)
    assert "config:  /etc/edgefleet/agent.toml" in text and "model.n_gpu_layers = -1" in text
    assert "\nWARN  llama.cpp" in text and "\nFAIL  model" in text
    assert text.endswith("1 FAIL: the agent cannot run as configured on this box.")
    body = json.loads(json.dumps(report.as_json()))
    assert body["ok"] is False and body["gpu"] == {"present": False, "devices": []}
    assert body["asks"]["n_gpu_layers"] == -1
    assert {"check": "model", "status": "fail"}.items() <= body["findings"][-2].items()


# -- real runs on this machine (no GPU, not a Jetson) -------------------------------------------


def test_probe_model_locates_without_writing(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100))
    found = doctor.probe_model(AgentConfig(model=ModelConfig(path=str(gguf))), tmp_path / "data")
    assert (found.name, found.size_bytes, found.present, found.error) == ("m", 104, True, "")
    missing = doctor.probe_model(AgentConfig(model=ModelConfig(path=str(tmp_path / "no.gguf"))), tmp_path)
    assert missing.error == f"model.path: {tmp_path / 'no.gguf'} is not a file"
    gemma = doctor.probe_model(AgentConfig(model=ModelConfig(name="gemma-3-270m")), tmp_path / "data")
    assert gemma.present is False and gemma.size_bytes > 200 * MiB
    assert gemma.path == str(tmp_path / "data" / "models" / "gemma-3-270m-q4_k_m.gguf")
    assert not (tmp_path / "data").exists()  # measured from its chunks, not assembled
    unknown = doctor.probe_model(AgentConfig(model=ModelConfig(name="llama-9000")), tmp_path)
    assert unknown.error.startswith("model.name: unknown model 'llama-9000'")


def run_doctor(*args):
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "doctor", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_doctor_on_this_machine_says_there_is_no_gpu(tmp_path):
    done = run_doctor("--json", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert report["gpu"] == {"present": False, "devices": []}
    gpu = next(f for f in report["findings"] if f["check"] == "gpu")
    assert gpu["status"] == "info" and gpu["message"].startswith("no GPU: ")
    facts = report["facts"]
    assert facts["cuda"]["devices"] == [] and facts["telemetry_gpus"] == []
    assert facts["llama"]["gpu_offload"] is False
    assert "CPU" in facts["llama"]["backends"]
    assert "CPUExecutionProvider" in facts["onnxruntime"]["providers"]
    assert facts["jetson"] is None
    assert report["asks"]["n_gpu_layers"] == 0 and report["asks"]["model"] == "smollm2-135m-instruct"
    assert facts["model"]["present"] is True and facts["model"]["size_bytes"] > 0
    assert not [f for f in report["findings"] if f["status"] in ("warn", "fail")], report["findings"]
    assert list(tmp_path.iterdir()) == []  # the doctor writes nothing


def test_doctor_on_this_machine_warns_when_the_config_asks_for_a_gpu(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[model]\nn_gpu_layers = -1\n")
    done = run_doctor("--config", str(cfg), "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "WARN  llama.cpp    model.n_gpu_layers = -1, but this llama-cpp-python build has no GPU offload" in done.stdout
    )
    assert "INFO  gpu          no GPU: " in done.stdout
    assert done.stdout.rstrip().endswith("no FAIL (1 WARN): the agent can run as configured on this box, on the CPU.")


def test_doctor_on_this_machine_fails_on_a_missing_model(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[model]\npath = "{tmp_path / "missing.gguf"}"\n')
    done = run_doctor("--config", str(cfg), "--data-dir", str(tmp_path), "--json")
    assert done.returncode == 1
    model = next(f for f in json.loads(done.stdout)["findings"] if f["check"] == "model")
    assert model == {
        "check": "model",
        "status": "fail",
        "message": f"model.path: {tmp_path / 'missing.gguf'} is not a file",
    }
