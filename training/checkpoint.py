"""Checkpoint directories: written crash-safely, hashed, and read back (safetensors and JSON only, never pickle).

`<run_dir>/checkpoints/<index:06d>/` holds exactly:

- `adapter_model.safetensors`: the LoRA tensors as PEFT names them; `__metadata__` = {"format": "pt",
  "prov.run_id": <64 hex>, "prov.checkpoint": "<index>", "prov.step": "<steps done>"} (+ "prov.base_model": the
  base-model digest, `prov.adapter.v2`). Its SHA-256 is the
  **weights digest**. Written by `training.tensorfile` (sorted header, sorted tensors): the bytes are a pure
  function of the tensors and metadata (no timestamps; the safetensors library's metadata order is not stable).
- `adapter_config.json`: PEFT's adapter config, sorted keys, no whitespace. How it names the base model is the run's
  adapter format (`formats.adapter` of the run manifest, `AdapterLayout`): `prov.adapter.v2` (new runs) follows
  Hugging Face conventions — `task_type` "CAUSAL_LM" and `base_model_name_or_path` the base model directory's name
  as the manifest records it (`base_model.name`), so `AutoPeftModelForCausalLM.from_pretrained(checkpoint_dir)` loads
  it where that name resolves (a directory of that name in the working directory, or a Hub id) — and moves the
  base-model digest into the adapter's metadata (`prov.base_model`); `prov.adapter.v1` (older runs, still written
  so replay rebuilds their bytes) put the digest in `base_model_name_or_path` and left `task_type` null.
- `optimizer.safetensors`: every tensor of the optimizer state, named `<param name>/<key>` (e.g. AdamW's
  `exp_avg`, `exp_avg_sq`, `step`).
- `state.json` (canonical JSON, `prov.trainstate.v2`; v1 is still read), top-level keys:
  `format`, `run_id` (hex), `checkpoint` (index), `step` (= steps done = `log_size`), `log_size`, `log_root` (hex
  RFC 6962 root of the step log at `log_size`), `epsilon` (ε spent, rounded up to a multiple of 1e-6 as the registry
  commits it, repr string; null for non-private: see `epsilon_text`), `delta` (repr or null),
  `weights` (`sha256:` of adapter_model.safetensors), `accountant` ({"name", "history": [[σ repr, q repr, steps]]}
  or null), `optimizer` ({"name", "param_names": [...], "state_keys": [...]}), `rng` ({"torch_cpu": hex of
  `torch.get_rng_state()`}), `sampler` ({"format": "prov.poisson.v1", "dataset_size", "sample_rate" repr,
  "next_step"}). Nothing in it depends on the number of processes that trained (see `training.dpstep`).
- `steps.jsonl`: the step-log lines for steps [previous checkpoint's log_size, log_size).
- `prov-checkpoint.json`: `hash_directory(dir).encode()`, excluded from its own digest.

Index 0 is the adapter right after LoRA init (log size 0). A directory is built as `.tmp-<name>-<pid>` beside its
final path, every file fsynced, then renamed into place, so a checkpoint directory under its final name is always
complete. `write_checkpoint` needs only a `LogView` of the step log (root at a size, the lines of a segment), so the
replay worker writes the same bytes from an in-memory log (`MemoryLog`) without the run's steps.jsonl.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any, Protocol

import torch

from provenance import canonical, merkle
from provenance.errors import FormatError, UsageError
from provenance.fsutil import fsync_dir
from provenance.hashing import Digest
from provenance.manifest import ADAPTER_FORMAT, ADAPTER_FORMAT_V1, MANIFEST_NAME, CheckpointManifest, hash_directory
from provenance.records import AnyStepRecord
from provenance.steplog import encode_line
from training import faults, tensorfile
from training.engine import Engine
from training.model import adapter_config_bytes, adapter_state, load_adapter_state
from training.runinfo import STATE_FORMAT

STATE_FORMATS = ("prov.trainstate.v1", STATE_FORMAT)
CHECKPOINTS = "checkpoints"
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
SEGMENT_FILE = "steps.jsonl"
CHECKPOINT_FILES = frozenset({ADAPTER_FILE, ADAPTER_CONFIG_FILE, OPTIMIZER_FILE, STATE_FILE, SEGMENT_FILE})


class LogView(Protocol):
    """What a checkpoint needs from the step log (`provenance.steplog.StepLog` is one; `MemoryLog` another)."""

    def root_at(self, size: int) -> bytes: ...
    def segment(self, start: int, end: int) -> bytes: ...
    def sync(self) -> None: ...


class MemoryLog:
    """A step log known only from its first `size` leaves' compact range plus the records appended since:
    enough to compute roots at sizes >= `size` and the lines of the segment after it (the replay worker's log)."""

    def __init__(self, *, size: int, hashes: Sequence[bytes]) -> None:
        self.start = size
        self._range = merkle.CompactRange(size, hashes)
        self._roots = {size: self._range.root()}
        self._lines: list[bytes] = []

    @property
    def size(self) -> int:
        return self._range.size

    def append(self, record: AnyStepRecord) -> None:
        if record.step != self.size:
            raise UsageError(f"log expects step {self.size} next, got step {record.step}")
        leaf = record.leaf_hash()
        self._range.append(leaf)
        root = self._range.root()
        self._roots[self.size] = root
        self._lines.append(encode_line(record, leaf, root))

    def root_at(self, size: int) -> bytes:
        if size not in self._roots:
            raise UsageError(f"log holds sizes {self.start}..{self.size}; no root at size {size}")
        return self._roots[size]

    def segment(self, start: int, end: int) -> bytes:
        if not self.start <= start <= end <= self.size:
            raise UsageError(f"log holds steps [{self.start}, {self.size}); no segment [{start}, {end})")
        return b"".join(self._lines[start - self.start : end - self.start])

    def sync(self) -> None:
        return None


def checkpoint_dir(run_dir: Path, index: int) -> Path:
    return run_dir / CHECKPOINTS / f"{index:06d}"


@dataclass(frozen=True)
class AdapterLayout:
    """How a run writes its adapter files (see the module docstring): the run manifest's `formats.adapter`."""

    format: str = ADAPTER_FORMAT_V1
    base_name: str = ""  # prov.adapter.v2: adapter_config.json's base_model_name_or_path


def adapter_layout(manifest: Mapping[str, Any]) -> AdapterLayout:
    """The adapter layout a run manifest records (absent: v1, every run before prov.adapter.v2)."""
    formats = manifest.get("formats")
    name = formats.get("adapter", ADAPTER_FORMAT_V1) if isinstance(formats, dict) else ADAPTER_FORMAT_V1
    if name not in (ADAPTER_FORMAT_V1, ADAPTER_FORMAT):
        raise FormatError(f"unknown adapter format {name!r} (this prov knows {ADAPTER_FORMAT_V1}, {ADAPTER_FORMAT})")
    if name == ADAPTER_FORMAT_V1:
        return AdapterLayout()
    base = manifest.get("base_model")
    base_name = base.get("name") if isinstance(base, dict) else None
    if not isinstance(base_name, str) or not base_name:
        raise FormatError(f"a {ADAPTER_FORMAT} run needs base_model.name in its manifest")
    return AdapterLayout(name, base_name)


def adapter_bytes(engine: Engine, *, run_id: str, index: int, step: int, base_model_digest: str = "",
                  layout: AdapterLayout = AdapterLayout()) -> bytes:
    """The exact bytes of `adapter_model.safetensors` for the engine's current weights."""
    metadata = {"format": "pt", "prov.checkpoint": str(index), "prov.run_id": run_id, "prov.step": str(step)}
    if layout.format == ADAPTER_FORMAT:
        metadata["prov.base_model"] = base_model_digest
    return tensorfile.encode(adapter_state(engine.peft_model), metadata)


def adapter_config(engine: Engine, *, base_model_digest: str, layout: AdapterLayout = AdapterLayout()) -> bytes:
    """The exact bytes of `adapter_config.json` in the run's adapter layout."""
    data = adapter_config_bytes(engine.peft_model, base_model_digest=base_model_digest)
    if layout.format == ADAPTER_FORMAT_V1:
        return data
    config = json.loads(data)
    config["base_model_name_or_path"] = layout.base_name
    config["task_type"] = "CAUSAL_LM"
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode("utf-8")


def optimizer_tensors(engine: Engine) -> tuple[dict[str, torch.Tensor], list[str]]:
    tensors: dict[str, torch.Tensor] = {}
    keys: set[str] = set()
    for name, p in engine.named_params:
        for key, value in engine.base_optimizer.state.get(p, {}).items():
            if not isinstance(value, torch.Tensor):
                raise FormatError(f"optimizer state {name}/{key} is not a tensor; cannot checkpoint it safely")
            tensors[f"{name}/{key}"] = value.detach().to("cpu").contiguous().clone()
            keys.add(key)
    return tensors, sorted(keys)


def epsilon_text(epsilon: float | None) -> str | None:
    """ε as state.json records it: rounded *up* to a multiple of 1e-6 (micro-ε, what the registry commits), as the
    repr of that float.

    Why not the full float: the PRV accountant's last bits depend on numpy's SIMD dispatch (measured: AVX512 and
    AVX2 builds of the same numpy differ at 1e-15), and state.json is part of the checkpoint digest that a replay on
    an auditor's machine must reproduce. At micro-ε granularity the two values round alike unless they straddle a
    multiple of 1e-6 (odds ~1e-9 per checkpoint); the committed value is unchanged (`epsilon_to_micro` of this text
    equals that of the full value, since both round up).
    """
    if epsilon is None:
        return None
    micro = int((Decimal(repr(float(epsilon))) * 1_000_000).to_integral_value(rounding=ROUND_CEILING))
    return repr(micro / 1e6)


def state_document(engine: Engine, *, run_id: str, index: int, log: LogView | None, weights: Digest,
                   state_keys: list[str], epsilon: float | None) -> dict[str, Any]:
    plan = engine.plan
    step = engine.next_step
    eps = epsilon
    accountant = None
    if engine.accountant is not None:
        accountant = {"history": [[repr(float(s)), repr(float(q)), int(n)] for s, q, n in engine.accountant.history],
                      "name": plan.accountant}
    return {
        "accountant": accountant,
        "checkpoint": index,
        "delta": None if plan.delta is None else repr(plan.delta),
        "epsilon": epsilon_text(eps),
        "format": STATE_FORMAT,
        "log_root": (log.root_at(step) if log is not None else b"\0" * 32).hex(),
        "log_size": step,
        "optimizer": {"name": plan.optimizer.name, "param_names": [n for n, _ in engine.named_params],
                      "state_keys": state_keys},
        "rng": {"torch_cpu": bytes(torch.get_rng_state().numpy().tobytes()).hex()},
        "run_id": run_id,
        "sampler": {"dataset_size": plan.dataset_size, "format": "prov.poisson.v1", "next_step": step,
                    "sample_rate": repr(plan.sample_rate)},
        "step": step,
        "weights": str(weights),
    }


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_checkpoint(run_dir: Path, *, index: int, engine: Engine, log: LogView, run_id: str,
                     base_model_digest: str, segment_start: int, epsilon: float | None,
                     out: Path | None = None, layout: AdapterLayout = AdapterLayout()) -> Path:
    """Write checkpoint `index` for the engine's current state; returns its final directory.

    `epsilon`: ε spent so far (None for non-private), which the trainer precomputes (`plan.EpsilonSchedule`);
    it equals `engine.epsilon()`. `out`: write there (absent or an empty directory) instead of
    `run_dir/checkpoints/<index>` (the replay worker). `layout`: the run's adapter layout (`adapter_layout`).
    """
    final = out if out is not None else checkpoint_dir(run_dir, index)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    if final.exists():
        if out is None or not final.is_dir() or any(final.iterdir()):
            raise UsageError(f"{final}: checkpoint {index} already exists")
        final.rmdir()
    log.sync()
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    adapter = adapter_bytes(engine, run_id=run_id, index=index, step=engine.next_step,
                            base_model_digest=base_model_digest, layout=layout)
    _write(tmp / ADAPTER_FILE, adapter)
    faults.point("checkpoint-write", index)
    _write(tmp / ADAPTER_CONFIG_FILE, adapter_config(engine, base_model_digest=base_model_digest, layout=layout))
    tensors, keys = optimizer_tensors(engine)
    _write(tmp / OPTIMIZER_FILE, tensorfile.encode(tensors, {"format": "prov.optimizer.v1"}))
    state = state_document(engine, run_id=run_id, index=index, log=log, weights=Digest.of(adapter), state_keys=keys,
                             epsilon=epsilon)
    _write(tmp / STATE_FILE, canonical.encode(state))
    _write(tmp / SEGMENT_FILE, log.segment(segment_start, engine.next_step))
    _write(tmp / MANIFEST_NAME, hash_directory(tmp).encode())
    fsync_dir(tmp)
    os.rename(tmp, final)
    fsync_dir(root)
    return final


FINAL_DIR = "final"


def write_final(run_dir: Path, index: int) -> Path:
    """`RUN/final/`: checkpoint `index`'s adapter as a plain PEFT directory — its adapter_model.safetensors and
    adapter_config.json, byte for byte the committed files — which PEFT loads and `prov verify RUN/final` verifies as
    a shipped adapter. Replaced whole (built beside it, then renamed) when a resumed run finishes again."""
    source, final = checkpoint_dir(run_dir, index), run_dir / FINAL_DIR
    tmp = run_dir / f".tmp-{FINAL_DIR}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name in (ADAPTER_FILE, ADAPTER_CONFIG_FILE):
        _write(tmp / name, (source / name).read_bytes())
    fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync_dir(run_dir)
    return final


# --- reading ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedCheckpoint:
    path: Path
    state: dict[str, Any]
    adapter: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    digest: Digest
    weights: Digest


def read_checkpoint(path: str | os.PathLike[str]) -> LoadedCheckpoint:
    """Read and check a checkpoint directory: its manifest must match its files; only safetensors/JSON parsed."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    p = Path(path)
    manifest_path = p / MANIFEST_NAME
    if not manifest_path.is_file():
        raise UsageError(f"{p}: not a checkpoint directory (no {MANIFEST_NAME})")
    stored = CheckpointManifest.decode(manifest_path.read_bytes(), source=str(manifest_path))
    actual = hash_directory(p)
    if actual != stored:
        raise FormatError(f"{p}: files do not match {MANIFEST_NAME} (incomplete or altered checkpoint)")
    names = {entry.path for entry in stored.files}
    if names != CHECKPOINT_FILES:
        raise FormatError(f"{p}: checkpoint files differ from the expected set ({sorted(names ^ CHECKPOINT_FILES)})")
    state = canonical.decode((p / STATE_FILE).read_bytes(), source=str(p / STATE_FILE), strict=True)
    if not isinstance(state, dict) or state.get("format") not in STATE_FORMATS:
        raise FormatError(f"{p / STATE_FILE}: not a {STATE_FORMAT} document")
    try:
        adapter = load((p / ADAPTER_FILE).read_bytes())
        optimizer = load((p / OPTIMIZER_FILE).read_bytes())
    except SafetensorError as exc:
        raise FormatError(f"{p}: unreadable safetensors ({exc})") from None
    return LoadedCheckpoint(p, state, adapter, optimizer, stored.digest(), stored.file(ADAPTER_FILE).digest)


def restore(engine: Engine, checkpoint: LoadedCheckpoint) -> None:
    """Put the engine in exactly the state the checkpoint recorded (weights, optimizer, RNG, accountant, step)."""
    state = checkpoint.state
    load_adapter_state(engine.peft_model, checkpoint.adapter)
    names = [n for n, _ in engine.named_params]
    if state["optimizer"]["param_names"] != names:
        raise FormatError(f"{checkpoint.path}: optimizer parameters differ from the model's LoRA parameters")
    engine.base_optimizer.state.clear()
    for name, p in engine.named_params:
        entries = {k.split("/", 1)[1]: _on(p, k.split("/", 1)[1], v) for k, v in checkpoint.optimizer.items()
                   if k.split("/", 1)[0] == name}
        if entries:
            engine.base_optimizer.state[p] = entries
    torch.set_rng_state(torch.frombuffer(bytearray(bytes.fromhex(state["rng"]["torch_cpu"])), dtype=torch.uint8))
    if engine.accountant is not None:
        history = state["accountant"]["history"] if state.get("accountant") else []
        engine.accountant.history = [(float(s), float(q), int(n)) for s, q, n in history]
    engine.next_step = int(state["step"])
    engine.sync_guard()


def _on(param: torch.nn.Parameter, key: str, value: torch.Tensor) -> torch.Tensor:
    """An optimizer state tensor where the optimizer keeps it: `step` counters on the CPU (a scalar), the rest
    beside the parameter, with its shape and dtype (a crafted checkpoint must not be broadcast into place)."""
    if key == "step":
        if value.dim() != 0:
            raise FormatError(f"optimizer state step counter has shape {tuple(value.shape)}; expected a scalar")
        return value.clone()
    if value.shape != param.shape or value.dtype != param.dtype:
        raise FormatError(f"optimizer state {key}: {value.dtype} {tuple(value.shape)} for a parameter of "
                          f"{param.dtype} {tuple(param.shape)}")
    return value.to(param.device).clone()


def complete_checkpoints(run_dir: Path) -> list[int]:
    """Indices of checkpoint directories under their final names (each was renamed into place whole)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    out = []
    for child in root.iterdir():
        if child.is_dir() and child.name.isdigit() and len(child.name) == 6 and (child / MANIFEST_NAME).is_file():
            out.append(int(child.name))
    return sorted(out)


def clear_partial(run_dir: Path) -> list[Path]:
    """Remove temp directories left by a checkpoint write that was killed (they were never committed)."""
    root = run_dir / CHECKPOINTS
    removed = []
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(".tmp-"):
                shutil.rmtree(child)
                removed.append(child)
    return removed
