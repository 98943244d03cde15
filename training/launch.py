"""What `prov train` does, as a library call: the CLI parses options and prints; everything else is here.

Order matters for determinism: the run's profile (new run: `determinism.profile`; resume: the recorded environment)
is put in the environment *before* torch is imported, so the CPU kernels are the recorded ones. Only then is the
trainer imported. A run of world size 1 trains in this process; a larger one is launched with
`torch.distributed.run` (`launch_torchrun`): this process prepares the run directory, starts N workers
(`python -m training.distributed`), relays rank 0's progress, and reads rank 0's result. The workers inherit the
environment. torchrun's own output goes to `RUN_DIR/launch.log`. This module never imports torch itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO

from provenance.errors import ProvenanceError, UsageError
from provenance.secrets import Secrets
from training import determinism
from training.config import AnchorConfig, TrainConfig, cli_overrides, load_config, with_overrides
from training.rundir import TrainResult
from training.runinfo import read_local, read_manifest

LAUNCH_LOG = "launch.log"
RESUME_OPTIONS = ("chain", "store", "nproc")


class DistributedError(ProvenanceError):
    """A torchrun run stopped; the message names the rank's error or the launcher's log."""

    def __init__(self, message: str, *, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class ResumeSettings:
    anchor: AnchorConfig | None  # None: the run's recorded anchoring
    nproc: int
    env: dict[str, str]  # the recorded determinism environment


def resume_settings(run_dir: Path, *, options: Mapping[str, Any], no_anchor: bool = False,
                    extra_given: bool = False) -> ResumeSettings:
    """Check what may be combined with `--resume` and resolve the settings a resume uses.

    Only `--no-anchor`, `--chain`, `--store`, `--nproc` and `--quiet` may be given: everything else is recorded.
    `--nproc` may be the recorded world size W or 1 (one process computes the W shards in order: the same bits).
    """
    if options.get("canaries") is not None:
        raise UsageError("--canaries: a run's canaries are drawn when it starts; --resume continues with the ones "
                         "it recorded (if any)")
    given = [name for name, value in options.items() if value is not None and name not in RESUME_OPTIONS]
    if given or extra_given:
        raise UsageError("--resume continues a run with its recorded settings; only --no-anchor, --chain, --store, "
                         "--nproc and --quiet may be combined with it")
    manifest = read_manifest(run_dir)
    world = int(manifest["training"].get("world_size", 1))
    nproc = options.get("nproc")
    if nproc is not None and nproc not in (1, world):
        raise UsageError(f"--nproc {nproc}: this run has world size {world}; resume it with {world} processes or 1")
    anchor = None
    if no_anchor or options.get("chain") or options.get("store"):
        _, _, local = read_local(run_dir)
        anchor = with_overrides(TrainConfig(anchor=local), {
            "anchor.enabled": False if no_anchor else None,
            "anchor.chain": options.get("chain"), "anchor.store": options.get("store"),
        }).anchor
    return ResumeSettings(anchor, world if nproc is None else int(nproc), determinism.environment_for(manifest))


def train_from_cli(config: Path | None, *, options: Mapping[str, Any], non_private: bool = False,
                   no_anchor: bool = False, secrets_file: Path | None = None, resume_dir: Path | None = None,
                   quiet: bool = False, stream: TextIO | None = None) -> TrainResult:
    """`prov train`: a new run from a config file plus option overrides, or `--resume RUN_DIR`."""
    out = stream or sys.stderr
    if resume_dir is not None:
        settings = resume_settings(resume_dir, options=options, no_anchor=no_anchor,
                                   extra_given=config is not None or non_private or secrets_file is not None)
        _warn(determinism.apply_environment(settings.env), out, quiet)
        if settings.nproc > 1:
            return launch_torchrun(resume_dir, nproc=settings.nproc, fresh=False, anchor=settings.anchor,
                                   quiet=quiet, stream=out)
        from training.trainer import resume

        return resume(resume_dir, quiet=quiet, anchor=settings.anchor, stream=out)
    cfg = with_overrides(load_config(config), cli_overrides(options, non_private=non_private, no_anchor=no_anchor))
    _warn(determinism.apply_profile(cfg.determinism.profile, device=cfg.model.device), out, quiet)
    secrets = Secrets.load(secrets_file) if secrets_file is not None else None
    if cfg.training.world_size == 1:
        from training.trainer import train

        return train(cfg, secrets=secrets, quiet=quiet, stream=out)
    from training.rundir import prepare_run

    if cfg.training.threads is None:  # torchrun would give each rank 1 thread; record what each really uses
        cfg = with_overrides(cfg, {"training.threads": max(1, (os.cpu_count() or 1) // cfg.training.world_size)})
    os.environ["OMP_NUM_THREADS"] = str(cfg.training.threads)
    run_dir = prepare_run(cfg, secrets=secrets)
    return launch_torchrun(run_dir, nproc=cfg.training.world_size, fresh=True, anchor=None, quiet=quiet, stream=out)


def _warn(lines: list[str], stream: TextIO, quiet: bool) -> None:
    if not quiet:
        for line in lines:
            stream.write(f"warning: {line}\n")


def torchrun_command(run_dir: Path, *, nproc: int, fresh: bool, quiet: bool, progress: Path, result: Path,
                     anchor: AnchorConfig | None) -> list[str]:
    """The `torch.distributed.run` command line that trains `run_dir` on `nproc` local processes."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
           f"--nproc-per-node={nproc}", "-m", "training.distributed", str(run_dir), "--progress", str(progress),
           "--result", str(result)]
    if fresh:
        cmd.append("--fresh")
    if quiet:
        cmd.append("--quiet")
    if anchor is not None:
        cmd += ["--anchor", json.dumps({k: v for k, v in vars(anchor).items()})]
    return cmd


def launch_torchrun(run_dir: Path, *, nproc: int, fresh: bool, anchor: AnchorConfig | None, quiet: bool = False,
                    stream: TextIO | None = None) -> TrainResult:
    """Train `run_dir` on `nproc` processes under torchrun; rank 0's progress is relayed to `stream`."""
    out = stream or sys.stderr
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(read_manifest(run_dir)["determinism"]["threads"]))
    with tempfile.TemporaryDirectory(prefix="prov-torchrun-") as tmp:
        progress, result = Path(tmp) / "progress", Path(tmp) / "result.json"
        progress.touch()
        cmd = torchrun_command(run_dir, nproc=nproc, fresh=fresh, quiet=quiet, progress=progress, result=result,
                               anchor=anchor)
        stop = threading.Event()
        relay = threading.Thread(target=_relay, args=(progress, out, stop), daemon=True)
        relay.start()
        with open(run_dir / LAUNCH_LOG, "ab") as log:
            rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
        stop.set()
        relay.join(timeout=5)
        return _result(result, rc, run_dir)


def _result(path: Path, rc: int, run_dir: Path) -> TrainResult:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = None
    if isinstance(doc, dict) and "result" in doc and rc == 0:
        return TrainResult.from_json(doc["result"])
    if isinstance(doc, dict) and "error" in doc:
        raise DistributedError(str(doc["error"]), exit_code=int(doc.get("exit_code", 2)))
    last = _last_line(run_dir / LAUNCH_LOG)
    raise DistributedError(f"torchrun exited with code {rc}{f' ({last})' if last else ''}; its output is in "
                           f"{run_dir / LAUNCH_LOG}; continue with `prov train --resume {run_dir}`")


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return ""
    ours = [line for line in lines if line.startswith("prov: error: ")]  # a rank's own one-line error
    errors = [line for line in lines if "error" in line.lower()]
    return (ours or errors or [line for line in lines if line] or [""])[-1][:300]


def _relay(path: Path, out: TextIO, stop: threading.Event) -> None:
    """Copy what rank 0 appends to its progress file onto `out` until `stop` (then the rest)."""
    with open(path, encoding="utf-8", errors="replace") as src:
        while True:
            done = stop.wait(0.2)
            _copy(src, out)
            if done:
                return


def _copy(src: IO[str], out: TextIO) -> None:
    chunk = src.read()
    if chunk:
        out.write(chunk)
        out.flush()
