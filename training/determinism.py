"""The settings bitwise replay depends on: recorded in the run manifest, applied on resume and replay.

Thread count and CPU kernel selection change float summation order, hence the bits (FACTS.md). The thread count
can be set in-process (`torch.set_num_threads`); the CPU capability is fixed when torch is imported, so a replay
on a machine that differs must be run in a subprocess with `environment_for(manifest)` (it sets
`ATEN_CPU_CAPABILITY`). `check(manifest)` lists every recorded setting this process does not match.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import torch

from provenance import __version__ as prov_version

ENV_VARS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (None: keep the default) and return the count in effect."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def settings(*, threads: int, dtype: str, attn_implementation: str) -> dict[str, Any]:
    """The run manifest's `determinism` section for this process."""
    return {
        "attn_implementation": attn_implementation,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": "cpu",
        "dtype": dtype,
        "env": {name: os.environ.get(name) for name in ENV_VARS},
        "machine": platform.machine(),
        "mkl": bool(torch.backends.mkl.is_available()),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "optimizer_foreach": False,
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


def check(manifest: dict[str, Any]) -> list[str]:
    """What this process differs in from the recorded settings and versions (empty: replay can be bitwise)."""
    recorded = manifest.get("determinism", {})
    problems = []
    capability = torch.backends.cpu.get_cpu_capability()
    if recorded.get("cpu_capability") != capability:
        problems.append(f"cpu_capability: recorded {recorded.get('cpu_capability')}, here {capability} "
                        "(run in a subprocess with ATEN_CPU_CAPABILITY set)")
    if recorded.get("threads") != torch.get_num_threads():
        problems.append(f"threads: recorded {recorded.get('threads')}, here {torch.get_num_threads()}")
    versions = manifest.get("software", {}).get("versions", {})
    mine = software_versions()
    for name in ("torch", "transformers", "peft", "opacus"):
        if versions.get(name) not in (None, mine.get(name)):
            problems.append(f"{name}: recorded {versions.get(name)}, here {mine.get(name)}")
    return problems


def environment_for(manifest: dict[str, Any]) -> dict[str, str]:
    """Environment variables a replay subprocess needs to match the recorded CPU settings."""
    recorded = manifest.get("determinism", {})
    env = {k: v for k, v in (recorded.get("env") or {}).items() if isinstance(v, str)}
    capability = recorded.get("cpu_capability")
    if isinstance(capability, str) and capability:
        env.setdefault("ATEN_CPU_CAPABILITY", capability.lower())
    return env
