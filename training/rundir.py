"""Creating a run directory: everything a run commits to before its first step, and the lock that keeps one trainer
per run.

`prepare_run(cfg)` loads and hashes the base model and the data (salted dataset root), resolves the plan, records
the determinism settings in effect, and writes `secrets.json` (0600), `local.json` and `run.json` (`prov.run.v2`)
into a new directory (with `audit.canaries` M > 0 also `canaries.json` (0600) and `data.jsonl`, the data the run
trains on: the user's records followed by the member canaries; provenance.canaries). Training then continues the
run from there (`training.trainer`), in this process or on every rank of a torchrun run (`training.distributed`),
exactly as a resume would: a new run is a run with no checkpoint.
Torch is imported only for the determinism settings, after `prov train` has applied the profile.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance.basemodel import base_model_summary, check_model_dir
from provenance.canaries import CANARIES_NAME, DATA_NAME, CanarySet, augment, draw, write_jsonl
from provenance.config import subdir
from provenance.dataset import Records, dataset_summary
from provenance.errors import UsageError
from provenance.hashing import Digest
from provenance.secrets import SECRETS_NAME, Secrets
from training import determinism
from training.anchoring import expected_owner
from training.config import AnchorConfig, TrainConfig, with_overrides
from training.data import data_path, records_for_config
from training.runinfo import build_manifest, write_local, write_manifest

LOCK_FILE = "train.lock"


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path | None
    run_id: str
    steps: int
    checkpoints: list[int]
    weights: Digest | None  # digest of the last checkpoint's adapter_model.safetensors
    epsilon: float | None
    anchored: bool  # the outbox was empty at the end

    def to_json(self) -> dict[str, Any]:
        return {"anchored": self.anchored, "checkpoints": self.checkpoints,
                "epsilon": None if self.epsilon is None else repr(self.epsilon),
                "run_dir": None if self.run_dir is None else str(self.run_dir), "run_id": self.run_id,
                "steps": self.steps, "weights": None if self.weights is None else str(self.weights)}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> TrainResult:
        return cls(None if value["run_dir"] is None else Path(value["run_dir"]), value["run_id"], int(value["steps"]),
                   [int(i) for i in value["checkpoints"]],
                   None if value["weights"] is None else Digest.parse(value["weights"]),
                   None if value["epsilon"] is None else float(value["epsilon"]), bool(value["anchored"]))


def default_model_dir() -> Path:
    """Where `prov init-model --tiny` puts the demo model when given no directory."""
    return subdir("models", create=False) / "tiny"


def lock_run(run_dir: Path) -> int:
    """Hold an exclusive lock on the run so a second `prov train --resume` cannot interleave steps with ours."""
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(f"{run_dir}: another prov train is running on this run") from None
    return fd


def unlock_run(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _new_run_dir(out: Path | None, run_id: str) -> Path:
    run_dir = out if out is not None else subdir("runs") / run_id[:16]
    if run_dir.exists():
        if (run_dir / "run.json").exists():
            raise UsageError(f"{run_dir}: already holds a run; continue it with --resume {run_dir}")
        if any(run_dir.iterdir()):
            raise UsageError(f"{run_dir}: directory is not empty; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


@dataclass(frozen=True)
class Inputs:
    """What a config points to, read and checked: model directory, data path and examples."""

    model_dir: Path
    data_path: Path
    examples: Sequence[Any]


def read_inputs(cfg: TrainConfig) -> Inputs:
    model_dir = Path(cfg.model.path) if cfg.model.path else default_model_dir()
    check_model_dir(model_dir)
    return Inputs(model_dir, data_path(cfg), records_for_config(cfg))


def run_settings(cfg: TrainConfig, *, threads: int) -> dict[str, Any]:
    """The manifest's `determinism` section for a run of `cfg` with `threads` threads per process."""
    return determinism.settings(profile=cfg.determinism.profile, threads=threads, dtype=cfg.model.dtype,
                                attn_implementation=cfg.model.attn_implementation, device=cfg.model.device)


NO_OWNER = ("anchoring is on, but which account will register this run cannot be told before step 0 ({why}): set "
            "PROV_PRIVATE_KEY to the key that anchors it (or pass --keystore FILE), start the chain (`prov chain "
            "up`), or train with --no-anchor. A run whose manifest names no owner can be registered first by anyone "
            "who copies it")
TESTER_KEY = (1).to_bytes(32, "big")  # eth-tester's funded account 0: the in-process chain's signer without a key


def run_owner(anchor: AnchorConfig) -> str | None:
    """The account that will register an anchored run, resolved before step 0 and recorded as the manifest's owner
    (so a registration of the same run by any other account is rejected as a copy); None only with anchoring off.
    Beyond `expected_owner` (a key in the environment, the project's local anvil) it knows the in-process chain's
    account and asks an unconfigured node for its chain id (a local dev chain signs with dev account 0); an anchored
    run whose signer stays unknown is refused rather than written owner-less."""
    if not anchor.enabled:
        return None
    owner = expected_owner(anchor)
    if owner is not None:
        return owner
    from eth_account import Account

    from provenance._chain.keys import LOCAL_CHAIN_ID, dev_signer
    from provenance.errors import ProvenanceError
    from training.anchoring import resolve_target

    chain, _, _ = resolve_target(anchor)
    if chain == "tester":
        return str(Account.from_key(TESTER_KEY).address)
    try:
        from provenance.chain import connect

        chain_id = connect(chain, use_config=False, timeout=30.0).chain_id
    except ProvenanceError as exc:
        raise UsageError(NO_OWNER.format(why=f"the node at {chain} did not answer: {' '.join(str(exc).split())}"))\
            from None
    if chain_id != LOCAL_CHAIN_ID:
        raise UsageError(NO_OWNER.format(why=f"no signing key is set and chain {chain_id} is not a local dev chain"))
    return dev_signer(0).address


def prepare_run(cfg: TrainConfig, *, secrets: Secrets | None = None, inputs: Inputs | None = None) -> Path:
    """Write a new run directory for `cfg` (see the module docstring) and return it."""
    from training.plan import resolve

    inputs = inputs or read_inputs(cfg)
    canaries = None
    if cfg.audit.canaries > 0:  # drawn before anything is committed: the dataset root covers the members
        cfg, inputs, canaries = _with_canaries(cfg, inputs)
    secrets = secrets or Secrets.generate()
    threads = determinism.apply_threads(cfg.training.threads)
    plan = resolve(cfg, dataset_size=len(inputs.examples))
    determinism.apply_device(cfg.model.device)
    manifest = build_manifest(
        base_model=base_model_summary(inputs.model_dir),
        dataset=dataset_summary(inputs.examples, secrets.dataset_key, path=inputs.data_path,
                                max_length=cfg.data.max_length),
        secrets=secrets.commitments(),
        training=plan.to_json(),
        config=cfg.committed_json(),
        software=determinism.software_versions(),
        determinism=run_settings(cfg, threads=threads),
        owner=run_owner(cfg.anchor),
        anchored_keys=cfg.anchor.enabled,  # prov.keys.v1: sampling/noise keys fixed by the registration block
        canaries=None if canaries is None else canaries.manifest_section(),
    )
    run_dir = _new_run_dir(Path(cfg.out) if cfg.out else None, manifest["run_id"])
    secrets.save(run_dir / SECRETS_NAME)
    data_file = inputs.data_path
    if canaries is not None:
        canaries.save(run_dir / CANARIES_NAME)
        data_file = run_dir / DATA_NAME
        assert isinstance(inputs.examples, Records)  # _with_canaries made them
        write_jsonl(data_file, inputs.examples)
    write_local(run_dir, model_dir=inputs.model_dir, data_path=data_file, anchor=cfg.anchor)
    write_manifest(run_dir, manifest)
    return run_dir


def _with_canaries(cfg: TrainConfig, inputs: Inputs) -> tuple[TrainConfig, Inputs, CanarySet]:
    """`audit.canaries` fresh canaries of the dataset's kind; the run trains on the user's records followed by the
    members, written as `RUN/data.jsonl` (the config's data format becomes jsonl, so the manifest says how to read
    it: resume, replay and `prov verify --data RUN/data.jsonl` read it like any run's data)."""
    records = inputs.examples
    if not isinstance(records, Records):
        raise UsageError("canaries need a dataset read from a file")
    canaries = draw(cfg.audit.canaries, kind=records.kind, max_length=cfg.data.max_length)
    cfg = with_overrides(cfg, {"data.format": "jsonl"})
    return cfg, Inputs(inputs.model_dir, Path(DATA_NAME), augment(records, canaries)), canaries
