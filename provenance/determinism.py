"""What bitwise replay depends on, read from a run manifest and checked against this machine — without torch.

A run manifest's `determinism` section records the settings that change floating-point results: torch's CPU kernel
selection (`cpu_capability`), the intra-op thread count, math-library environment variables, the device (and on
CUDA the GPU and its software), the dtype; `software.versions` records the library versions. The verifier:

1. **validates** them against what can exist (`invalid_settings`): an unknown capability, a thread count no machine
   has, a version that is not a version, a device prov does not know. A trainer that records settings nobody can
   match to escape replay gets a *failed* check, not a skip.
2. asks whether **this machine can provide them** (`unmatched`): a lower CPU capability is always available on a
   CPU that has a higher one (AVX512 ⊃ AVX2 ⊃ DEFAULT); the thread count can always be set; library versions and the
   GPU must be the same. When they cannot, replay still runs (it checks every field that does not depend on floating
   point) but its verdict is *inconclusive*, never verified.
3. runs the replay worker with the recorded environment (`replay_environment`): the capability is fixed when torch
   is imported, so it is set in the worker process's environment.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from provenance import __version__ as prov_version
from provenance.errors import FormatError

# torch.backends.cpu.get_cpu_capability() values, and what ATEN_CPU_CAPABILITY calls them.
CAPABILITY_ENV = {"DEFAULT": "default", "NO AVX": "default", "AVX2": "avx2", "AVX512": "avx512", "VSX": "vsx",
                  "Z VECTOR": "zvector", "SVE256": "sve256"}
DEVICES = ("cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")
PROFILES = ("portable", "native")
# Libraries whose code runs in a training step: a different version may compute other bits.
REPLAY_PACKAGES = ("torch", "transformers", "peft", "opacus", "numpy", "safetensors", "tokenizers")
MAX_THREADS = 4096
# The only environment variables a run may record and a replay worker will set: math-library and thread controls.
# Anything else (PYTHONPATH, LD_PRELOAD, ...) would let a run's manifest run code of the trainer's choosing in the
# auditor's replay worker, so it fails the replay check.
ENV_ALLOWED = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS",
               "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG", "NVIDIA_TF32_OVERRIDE")
_ENV_VALUE = re.compile(r"^[A-Za-z0-9_:.,-]{0,64}$")
_VERSION = re.compile(r"^\d+(\.\d+){0,3}((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[A-Za-z0-9.]+)?$")


@dataclass(frozen=True)
class Recorded:
    """The determinism settings a run manifest records."""

    capability: str | None
    threads: int | None
    device: str
    dtype: str
    profile: str | None
    env: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    gpu: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"capability": self.capability, "threads": self.threads, "device": self.device, "dtype": self.dtype,
                "profile": self.profile, "env": dict(self.env), "versions": dict(self.versions), "gpu": self.gpu}


def recorded(manifest: Mapping[str, Any]) -> Recorded:
    """The settings of a (validated) run manifest; malformed sections are a FormatError."""
    det = manifest.get("determinism")
    if not isinstance(det, dict):
        raise FormatError("run manifest: determinism section missing")
    threads = det.get("threads")
    env = det.get("env") or {}
    versions = (manifest.get("software") or {}).get("versions") or {}
    if not isinstance(env, dict) or not isinstance(versions, dict):
        raise FormatError("run manifest: determinism.env and software.versions must be objects")
    return Recorded(
        capability=det.get("cpu_capability") if isinstance(det.get("cpu_capability"), str) else None,
        threads=threads if isinstance(threads, int) and not isinstance(threads, bool) else None,
        device=str(det.get("device", "cpu")),
        dtype=str(det.get("dtype", "float32")),
        profile=det.get("profile") if isinstance(det.get("profile"), str) else None,
        env={str(k): str(v) for k, v in env.items() if isinstance(v, str)},
        versions={str(k): str(v) for k, v in versions.items()},
        gpu=det.get("gpu") if isinstance(det.get("gpu"), dict) else None,
    )


def invalid_settings(rec: Recorded) -> list[str]:
    """Recorded settings that no machine can have: each one fails the replay check."""
    problems = []
    if rec.capability is None or rec.capability not in CAPABILITY_ENV:
        problems.append(f"CPU capability {rec.capability!r} is not one torch knows ({', '.join(CAPABILITY_ENV)})")
    if rec.threads is None or not 1 <= rec.threads <= MAX_THREADS:
        problems.append(f"thread count {rec.threads!r} is not between 1 and {MAX_THREADS}")
    if rec.device not in DEVICES:
        problems.append(f"device {rec.device!r} is not one prov trains on ({', '.join(DEVICES)})")
    if rec.dtype not in DTYPES:
        problems.append(f"dtype {rec.dtype!r} is not one prov trains in ({', '.join(DTYPES)})")
    for name, value in rec.env.items():
        if name not in ENV_ALLOWED or not _ENV_VALUE.match(value):
            problems.append(f"environment variable {name}={value[:40]!r} is not a determinism setting prov sets "
                            f"(allowed: {', '.join(ENV_ALLOWED)})")
    if rec.profile is not None and rec.profile not in PROFILES:
        problems.append(f"determinism profile {rec.profile!r} is unknown ({', '.join(PROFILES)})")
    for name in REPLAY_PACKAGES:
        text = rec.versions.get(name)
        if text is not None and text != "absent" and not _VERSION.match(text):
            problems.append(f"{name} version {text!r} is not a version number")
    return problems


def machine_capabilities(cpuinfo: str | None = None) -> set[str]:
    """The torch CPU capabilities this machine can run (a CPU with a higher one can always run the lower ones)."""
    arch = platform.machine().lower()
    found = {"DEFAULT", "NO AVX"}
    if arch in ("x86_64", "amd64"):
        if cpuinfo is None:
            try:
                cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
            except OSError:
                cpuinfo = ""
        flags = set()
        for line in cpuinfo.splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[-1].split())
                break
        if {"avx2", "fma"} <= flags:
            found.add("AVX2")
            if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
                found.add("AVX512")
    return found


def installed_versions() -> dict[str, str]:
    """Versions of the replay packages installed here (without importing them)."""
    out = {"prov": prov_version}
    for name in REPLAY_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def unmatched(rec: Recorded, *, here: Mapping[str, str] | None = None,
              capabilities: set[str] | None = None, gpu: Mapping[str, Any] | None = None) -> list[str]:
    """Why this machine cannot reproduce the recorded settings bit for bit (empty: it can)."""
    here = dict(installed_versions() if here is None else here)
    capabilities = machine_capabilities() if capabilities is None else capabilities
    problems = []
    if rec.device == "cpu" and rec.capability is not None and rec.capability not in capabilities | {"NO AVX"}:
        problems.append(f"the run used CPU kernels {rec.capability}, which this CPU cannot run "
                        f"(it has {', '.join(sorted(capabilities - {'NO AVX'}))})")
    if rec.device == "cuda":
        if gpu is None:
            problems.append("the run trained on a CUDA GPU and this machine has none")
        else:
            for key in ("name", "cuda", "driver"):
                if (rec.gpu or {}).get(key) != gpu.get(key):
                    problems.append(f"GPU {key}: recorded {(rec.gpu or {}).get(key)!r}, here {gpu.get(key)!r}")
    for name in REPLAY_PACKAGES:
        want = rec.versions.get(name)
        if want is not None and want != here.get(name):
            problems.append(f"{name} {want} was used; here it is {here.get(name)} (pip install '{name}=={want}')")
    return problems


# Best first: a CPU that has one of these can run every later one.
_CAPABILITY_ORDER = ("AVX512", "AVX2", "DEFAULT")


def best_capability(capabilities: set[str]) -> str:
    """The highest torch CPU capability of `capabilities` (what torch picks by itself on this CPU)."""
    return next((c for c in _CAPABILITY_ORDER if c in capabilities), "DEFAULT")


def replay_environment(rec: Recorded, base: Mapping[str, str] | None = None, *,
                       capabilities: set[str] | None = None) -> dict[str, str]:
    """The environment of a replay worker process: this one's, with the recorded math-library variables, CPU
    capability and thread counts put in place (set before torch is imported, as the trainer did).

    A recorded capability this CPU cannot run (AVX512 on an AVX2 machine) would kill the worker with SIGILL before
    it checks anything: the worker then gets the best capability this CPU has, so checkpoint 0 and every field
    that does not depend on floating point are still checked; `unmatched` already says the weights cannot be
    bitwise here, so their verdict stays inconclusive."""
    env = dict(os.environ if base is None else base)
    env.update({k: v for k, v in rec.env.items() if k in ENV_ALLOWED})
    if rec.capability in CAPABILITY_ENV:
        env["ATEN_CPU_CAPABILITY"] = CAPABILITY_ENV[rec.capability]
    if rec.device == "cpu" and "ATEN_CPU_CAPABILITY" in env:
        here = machine_capabilities() if capabilities is None else capabilities
        runnable = {CAPABILITY_ENV[c] for c in here | {"DEFAULT"} if c in CAPABILITY_ENV}
        if env["ATEN_CPU_CAPABILITY"].lower() not in runnable:
            env["ATEN_CPU_CAPABILITY"] = CAPABILITY_ENV[best_capability(here)]
    if rec.threads is not None:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            if name not in rec.env:
                env[name] = str(rec.threads)
    if rec.device == "cuda":
        env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return env
