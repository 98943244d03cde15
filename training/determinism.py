"""The settings bitwise replay depends on: the determinism profile, recorded in the run manifest, applied on resume
and replay.

Thread count and CPU kernel selection change float summation order, hence the bits (FACTS.md). The thread count
can be set in-process (`torch.set_num_threads`); the CPU kernels are chosen from the environment when torch is
imported, so the **profile** must be in the environment before that (`apply_profile`, called by `prov train`
before it imports the trainer; the replay worker is started with `environment_for(manifest)` already set).

Profiles (`determinism.profile`):

- `portable` (default): on x86-64 `ATEN_CPU_CAPABILITY=avx2`, `MKL_CBWR=AVX2`, `ONEDNN_MAX_CPU_ISA=AVX2`: kernels
  nearly every x86-64 auditor can run (a CPU with AVX512 runs the AVX2 kernels too), so a replay elsewhere can be
  bitwise. On aarch64 torch's default capability is already portable; nothing is set.
- `native`: whatever this CPU selects (faster where it has AVX512; replayable only on a CPU that has it).

If torch was imported before the profile could be applied, the capability really in effect is recorded (as
`native` when it is not the portable one) and a warning says so. This module imports torch only inside functions,
so it can run first.

CUDA (`model.device = "cuda"`): deterministic algorithms on (`torch.use_deterministic_algorithms(True)`,
`CUBLAS_WORKSPACE_CONFIG=:4096:8`, cuDNN deterministic and no benchmark, TF32 off), recorded with the GPU model,
driver and CUDA versions (`cuda_settings`).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from provenance import __version__ as prov_version
from provenance.errors import UsageError

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
KERNEL_VARS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")
CUDA_VARS = ("CUBLAS_WORKSPACE_CONFIG",)
ENV_VARS = (*KERNEL_VARS, *THREAD_VARS, *CUDA_VARS)
PORTABLE_ENV = {
    "x86_64": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "AMD64": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
CUBLAS_WORKSPACE = ":4096:8"
# torch.backends.cpu.get_cpu_capability() value -> the ATEN_CPU_CAPABILITY that selects it
KNOWN_CAPABILITIES = {"DEFAULT": "default", "NO AVX": "default", "AVX2": "avx2", "AVX512": "avx512",
                      "ZVECTOR": "zvector", "SVE256": "sve256"}
REPLAY_PACKAGES = ("torch", "transformers", "peft", "opacus")


def profile_environment(profile: str, *, device: str = "cpu", machine: str | None = None) -> dict[str, str]:
    """The environment variables profile `profile` sets on this (or the given) machine."""
    if profile not in ("portable", "native"):
        raise UsageError(f"determinism.profile: must be portable or native, got {profile!r}")
    env = dict(PORTABLE_ENV.get(machine or platform.machine(), {})) if profile == "portable" else {}
    if device == "cuda":
        env["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    return env


def apply_profile(profile: str, *, device: str = "cpu") -> list[str]:
    """Put the profile's variables in the environment, if torch is not imported yet; returns warnings to show.

    Called by `prov train` before the trainer (and torch) is imported, and by the torchrun launcher before it
    starts the workers (they inherit the environment).
    """
    wanted = profile_environment(profile, device=device)
    if "torch" not in sys.modules:
        os.environ.update(wanted)
        return []
    warnings = []
    expected = wanted.get("ATEN_CPU_CAPABILITY")
    actual = cpu_capability()
    if expected is not None and actual.lower() != expected:
        warnings.append(f"determinism.profile {profile}: torch was imported before the profile could be applied "
                        f"and runs {actual} kernels; recorded as native (`prov train` applies {profile} in time)")
    if device == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    return warnings


def cpu_capability() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def effective_profile(profile: str) -> str:
    """The profile really in effect: `portable` only if its capability is the one torch runs."""
    expected = profile_environment(profile).get("ATEN_CPU_CAPABILITY")
    if profile == "portable" and expected is not None and cpu_capability().lower() != expected:
        return "native"
    return profile


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (None: keep the default) and return the count in effect."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return int(torch.get_num_threads())


def apply_device(device: str) -> None:
    """Switch on the deterministic settings of `device` (CUDA: see the module docstring); refuse a missing GPU."""
    if device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise UsageError("model.device is cuda but no CUDA GPU is visible here (use model.device = \"cpu\")")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    line = out.stdout.strip().splitlines()
    return line[0].strip() if out.returncode == 0 and line else "unknown"


def cuda_settings() -> dict[str, Any]:
    """What a CUDA run records: GPU model, driver and CUDA versions, and the deterministic-algorithm settings."""
    import torch

    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return {
        "compute_capability": f"{major}.{minor}",
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "cuda": str(torch.version.cuda),
        "cudnn": str(torch.backends.cudnn.version()),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled()),
        "driver": _driver_version(),
        "gpu": torch.cuda.get_device_name(index),
        "tf32": bool(torch.backends.cuda.matmul.allow_tf32),
    }


def recorded_env() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in ENV_VARS}


def settings(*, profile: str, threads: int, dtype: str, attn_implementation: str,
             device: str = "cpu") -> dict[str, Any]:
    """The run manifest's `determinism` section for this process."""
    import torch

    return {
        "attn_implementation": attn_implementation,
        "cpu_capability": cpu_capability(),
        "cuda": cuda_settings() if device == "cuda" else None,
        "device": device,
        "dtype": dtype,
        "env": recorded_env(),
        "machine": platform.machine(),
        "mkl": bool(torch.backends.mkl.is_available()),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "optimizer_foreach": False,
        "profile": effective_profile(profile),
        "threads": threads,
    }


def software_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"prov": prov_version, "python": sys.version.split()[0]}
    for name in ("torch", "transformers", "peft", "opacus", "safetensors", "tokenizers", "numpy", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def environment_report(*, device: str, dtype: str) -> dict[str, Any]:
    """What this process runs with, in the replay worker's result (`environment`)."""
    import torch

    return {
        "cpu_capability": cpu_capability(),
        "device": device,
        "dtype": dtype,
        "env": recorded_env(),
        "gpu": cuda_settings() if device == "cuda" else None,
        "threads": int(torch.get_num_threads()),
        "versions": software_versions(),
    }


def check(manifest: Mapping[str, Any]) -> list[str]:
    """What this process differs in from the recorded settings and versions (empty: replay can be bitwise)."""
    import torch

    recorded = manifest.get("determinism", {})
    problems = []
    capability = cpu_capability()
    if recorded.get("cpu_capability") != capability:
        problems.append(f"cpu_capability: recorded {recorded.get('cpu_capability')}, here {capability} "
                        "(run in a subprocess with ATEN_CPU_CAPABILITY set)")
    if recorded.get("threads") != torch.get_num_threads():
        problems.append(f"threads: recorded {recorded.get('threads')}, here {torch.get_num_threads()}")
    versions = manifest.get("software", {}).get("versions", {})
    mine = software_versions()
    for name in REPLAY_PACKAGES:
        if versions.get(name) not in (None, mine.get(name)):
            problems.append(f"{name}: recorded {versions.get(name)}, here {mine.get(name)}")
    cuda = recorded.get("cuda")
    if isinstance(cuda, dict):
        if not torch.cuda.is_available():
            problems.append("device: recorded cuda, no GPU here")
        else:
            here = cuda_settings()
            for key in ("gpu", "cuda", "driver"):
                if cuda.get(key) != here.get(key):
                    problems.append(f"{key}: recorded {cuda.get(key)}, here {here.get(key)}")
    return problems


def environment_for(manifest: Mapping[str, Any]) -> dict[str, str]:
    """Environment variables a fresh process (replay worker, resume) needs to match the recorded settings: the
    recorded values of the known variables only (a manifest is untrusted input), and ATEN_CPU_CAPABILITY from the
    capability torch recorded running, when it is a known one."""
    recorded = manifest.get("determinism", {})
    env = {k: v for k, v in (recorded.get("env") or {}).items()
           if isinstance(v, str) and k in ENV_VARS and k != "ATEN_CPU_CAPABILITY"}
    capability = recorded.get("cpu_capability")  # what torch really ran, whatever the variable said
    if isinstance(capability, str) and capability.upper() in KNOWN_CAPABILITIES:
        env["ATEN_CPU_CAPABILITY"] = KNOWN_CAPABILITIES[capability.upper()]
    if recorded.get("device") == "cuda":
        env.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    return env


def apply_environment(env: Mapping[str, str]) -> list[str]:
    """Set `env` before torch is imported (resume from the CLI); returns a warning if it is too late."""
    if "torch" not in sys.modules:
        os.environ.update(env)
        return []
    wanted = env.get("ATEN_CPU_CAPABILITY")
    if wanted is not None and cpu_capability().lower() != wanted.lower():
        return [f"torch already runs {cpu_capability()} kernels; the run recorded {wanted}"]
    return []
