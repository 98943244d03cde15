"""The replay worker: re-runs checkpoint segments of a run with the trainer's own engine and rebuilds each complete
checkpoint directory, so the verifier can compare checkpoint digests (every byte of state, not only the weights).

The verifier (no torch) runs `python -m training.replay --request REQ.json --result RES.json` in a subprocess whose
environment already holds the run's recorded determinism settings (`training.determinism.environment_for`), and
finds this module through the `prov.replay` entry point group. It never imports `provenance.verify`.

Request (`prov.replay-request.v1`, JSON):

    {"format", "manifest": path of the verified run.json, "base_model": dir, "data": path or null,
     "secrets": secrets.json or null (both may be null when no segment runs a step: checkpoint 0 and zero-step
     segments need neither),
     "segments": [{"start": checkpoint dir j-1 (already verified) or null, "index": j, "steps": [a, b],
                   "log": {"size": a, "hashes": [hex, ...]}, "out": dir}]}

`start` null rebuilds checkpoint 0 from the base model, the LoRA config and seed and a fresh optimizer (`steps`
[0, 0]). Otherwise `start` is restored (its log size must be a) and steps a..b-1 run; `log` is the
`provenance.merkle.CompactRange` of the log's first a leaves, from which the log roots and steps.jsonl lines of
the segment are computed. A segment with a == b is replayed too (restore j-1, write j). Each rebuilt checkpoint is
written into `out` (absent or empty) with the trainer's `write_checkpoint`.

Result (`prov.replay-result.v1`): `{"format", "environment": {"cpu_capability", "threads", "device", "dtype",
"versions", "env", "gpu", "shard_threads"}, "segments": [{"index", "checkpoint_digest", "weights_digest",
"records": [step record JSON], "stats": [StepStats JSON], "indices": [[...] per step]} or {"index", "error": one
line}]}`.

Exit status: 0 when the result file was written (even with per-segment errors); 2 with one stderr line when the
request cannot be run (malformed, wrong secrets, model or data that are not the run's, a v1 run, a CUDA run and no
GPU here). The model is loaded once for all segments; runs of any world size replay in this one process: the W
shards are computed as the W ranks did, each with the recorded intra-op thread count, concurrently on as many
threads as this machine's cores allow (`training.engine.ShardThreads`; in rank order where the model draws random
numbers), so the bits are the run's and a 2-process run replays in about the time it trained on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance import canonical
from provenance.basemodel import base_model_manifest
from provenance.dataset import dataset_root
from provenance.errors import FormatError, ProvenanceError, UsageError, one_line
from provenance.hashing import Digest
from provenance.manifest import MANIFEST_NAME, CheckpointManifest
from provenance.secrets import Secrets, keys_anchored, load_anchor

REQUEST_FORMAT = "prov.replay-request.v1"
RESULT_FORMAT = "prov.replay-result.v1"


@dataclass(frozen=True)
class SegmentRequest:
    index: int
    start: Path | None
    steps: tuple[int, int]
    log_size: int
    log_hashes: tuple[bytes, ...]
    out: Path


@dataclass(frozen=True)
class ReplayRequest:
    manifest: Path
    base_model: Path
    data: Path | None  # None: no segment runs a step
    secrets: Path | None
    segments: tuple[SegmentRequest, ...]
    keys_anchor: bytes | None = None  # prov.keys.v1 runs: the registration's block hash (from the chain)

    def to_json(self) -> dict[str, Any]:
        return {"base_model": str(self.base_model), "data": None if self.data is None else str(self.data),
                "format": REQUEST_FORMAT, "manifest": str(self.manifest),
                "secrets": None if self.secrets is None else str(self.secrets),
                "keys_anchor": None if self.keys_anchor is None else "0x" + self.keys_anchor.hex(),
                "segments": [{"index": s.index, "log": {"hashes": [h.hex() for h in s.log_hashes],
                                                        "size": s.log_size},
                              "out": str(s.out), "start": None if s.start is None else str(s.start),
                              "steps": list(s.steps)} for s in self.segments]}


def _field(doc: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise FormatError(f"replay request: {where}{name} is missing or malformed")
    return value


def parse_segment(doc: Any, number: int) -> SegmentRequest:
    where = f"segments[{number}]."
    if not isinstance(doc, dict):
        raise FormatError(f"replay request: segments[{number}] must be an object")
    index = _field(doc, "index", int, where)
    steps = _field(doc, "steps", list, where)
    log = _field(doc, "log", dict, where)
    if len(steps) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps) \
            or not 0 <= steps[0] <= steps[1] or index < 0:
        raise FormatError(f"replay request: {where}steps must be [a, b] with 0 <= a <= b")
    size = _field(log, "size", int, where + "log.")
    hashes = _field(log, "hashes", list, where + "log.")
    try:
        raw = tuple(bytes.fromhex(h) for h in hashes)
    except (TypeError, ValueError):
        raise FormatError(f"replay request: {where}log.hashes must be hex strings") from None
    if size != steps[0]:
        raise FormatError(f"replay request: {where}log.size must equal the first step {steps[0]}")
    start = doc.get("start")
    if start is not None and not isinstance(start, str):
        raise FormatError(f"replay request: {where}start must be a path or null")
    if start is None and (index != 0 or steps != [0, 0]):
        raise FormatError(f"replay request: {where}start null rebuilds checkpoint 0 only (index 0, steps [0, 0])")
    return SegmentRequest(index, None if start is None else Path(start), (steps[0], steps[1]), size, raw,
                          Path(_field(doc, "out", str, where)))


def parse_request(doc: Any) -> ReplayRequest:
    """Check a request document read from the verifier (every field; paths are not opened here)."""
    if not isinstance(doc, dict) or doc.get("format") != REQUEST_FORMAT:
        raise FormatError(f"replay request: not a {REQUEST_FORMAT} document")
    segments = _field(doc, "segments", list, "")
    return ReplayRequest(Path(_field(doc, "manifest", str, "")), Path(_field(doc, "base_model", str, "")),
                         _optional_path(doc, "data"), _optional_path(doc, "secrets"),
                         tuple(parse_segment(s, i) for i, s in enumerate(segments)), _keys_anchor(doc))


def _keys_anchor(doc: dict[str, Any]) -> bytes | None:
    """The optional `keys_anchor` field: a 32-byte block hash as 0x-hex, or null/absent."""
    value = doc.get("keys_anchor")
    if value is None:
        return None
    try:
        raw = bytes.fromhex(value[2:]) if isinstance(value, str) and value.startswith("0x") else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise FormatError("replay request: keys_anchor must be a block hash (0x and 64 hex digits) or null")
    return raw


def shard_threads(world: int, threads: int) -> int:
    """How many shards of a W-rank step to compute at once: as many as this process's cores hold at the recorded
    intra-op thread count each, at most W."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(world, cores // max(1, threads)))


def _check_settings(det: Any, *, source: str) -> dict[str, Any]:
    """The recorded determinism settings this worker applies, checked (a manifest is untrusted input)."""
    from training.config import DEVICES, DTYPES

    threads = det.get("threads") if isinstance(det, dict) else None
    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= 4096:
        raise FormatError(f"{source}: determinism.threads must be an integer in [1, 4096]")
    if det.get("device", "cpu") not in DEVICES or det.get("dtype") not in DTYPES \
            or det.get("attn_implementation") != "eager":
        raise FormatError(f"{source}: unknown determinism settings (device {det.get('device')!r}, dtype "
                          f"{det.get('dtype')!r}, attention {det.get('attn_implementation')!r})")
    return dict(det)


def _optional_path(doc: dict[str, Any], name: str) -> Path | None:
    value = doc.get(name)
    if value is not None and not isinstance(value, str):
        raise FormatError(f"replay request: {name} must be a path or null")
    return None if value is None else Path(value)


def _no_batches(step: int, indices: Sequence[int]) -> Any:
    raise UsageError(f"step {step} needs the data, which the request did not give")


class Replayer:
    """Everything loaded once for a request: manifest, secrets, data, model and engine."""

    def __init__(self, request: ReplayRequest) -> None:
        import torch

        from training import determinism
        from training.data import records_for_run
        from training.engine import LocalCollective, load_engine
        from training.model import adapter_state
        from training.runinfo import RUN_FORMAT, decode_manifest

        try:
            data = request.manifest.read_bytes()
        except OSError as exc:
            raise UsageError(f"{request.manifest}: cannot read the run manifest ({exc.strerror})") from None
        self.manifest = decode_manifest(data, source=str(request.manifest))
        if self.manifest["format"] != RUN_FORMAT:
            raise UsageError(f"{request.manifest}: a {self.manifest['format']} run cannot be replayed by this "
                             "version (its noise generator kept only 32 bits of its seed)")
        found = base_model_manifest(request.base_model).digest()
        if str(found) != self.manifest["base_model"]["digest"]:
            raise UsageError(f"{request.base_model}: not the run's base model (expected "
                             f"{self.manifest['base_model']['digest']}, found {found})")
        records = None
        if request.data is None or request.secrets is None:
            if any(s.steps[0] < s.steps[1] for s in request.segments):
                raise UsageError("a segment runs training steps: the request needs data and secrets")
            # nothing a step-free checkpoint holds derives from the secrets: any key builds the engine
            self.secrets = Secrets(bytes(32), bytes(32))
        else:
            self.secrets = Secrets.load(request.secrets)
            self.secrets.check_commitments(self.manifest["secrets"])
            if keys_anchored(self.manifest) and request.keys_anchor is None:
                raise UsageError("the run's sampling and noise keys derive from its registration block "
                                 "(prov.keys.v1): the request needs keys_anchor")
            self.secrets = self.secrets.anchored(request.keys_anchor if keys_anchored(self.manifest) else None)
            records = records_for_run(request.data, self.manifest)
            if str(dataset_root(records, self.secrets.dataset_key)) != self.manifest["dataset"]["root"]:
                raise UsageError(f"{request.data}: not the run's data (its salted dataset root differs)")
        det = _check_settings(self.manifest["determinism"], source=str(request.manifest))
        device = str(det.get("device", "cpu"))
        determinism.apply_threads(int(det["threads"]))
        determinism.apply_device(device)  # a CUDA run and no GPU here: a request this machine cannot run
        self.environment = determinism.environment_report(device=device, dtype=str(det["dtype"]))
        size = self.manifest["training"].get("dataset_size")
        if records is not None and size != len(records):
            raise UsageError(f"{request.manifest}: the plan samples from {size} examples; the data holds "
                             f"{len(records)}")
        world = int(self.manifest["training"].get("world_size", 1))
        self.engine = load_engine(self.manifest, self.secrets, request.base_model, examples=records,
                                  batches=None if records is not None else _no_batches,
                                  collective=LocalCollective(world),
                                  shard_threads=shard_threads(world, int(det["threads"])))
        # checkpoint 0 is the engine right after LoRA init: keep it to rebuild that checkpoint at any time
        self.initial_adapter = adapter_state(self.engine.peft_model)
        self.initial_rng = torch.get_rng_state()

    def segment(self, seg: SegmentRequest) -> dict[str, Any]:
        from training import checkpoint as ckpt
        from training.plan import epsilon_after

        engine = self.engine
        run_id = self.manifest["run_id"]
        a, b = seg.steps
        log = ckpt.MemoryLog(size=seg.log_size, hashes=seg.log_hashes)
        if seg.start is None:
            self._reset()
        else:
            loaded = ckpt.read_checkpoint(seg.start)
            if loaded.state.get("run_id") != run_id:
                raise UsageError(f"{seg.start}: checkpoint of run {loaded.state.get('run_id')}, not {run_id}")
            if int(loaded.state["log_size"]) != a:
                raise UsageError(f"{seg.start}: checkpoint holds {loaded.state['log_size']} steps; the segment "
                                 f"starts at step {a}")
            if log.root_at(a).hex() != loaded.state["log_root"]:
                raise UsageError(f"segment {seg.index}: the log state given does not have the start checkpoint's "
                                 "root")
            ckpt.restore(engine, loaded)
        if b > engine.plan.steps:
            raise UsageError(f"segment {seg.index}: the run has {engine.plan.steps} steps; cannot run to step {b}")
        records, stats, indices = [], [], []
        for k in range(a, b):
            result = engine.step(k)
            assert result.record is not None
            log.append(result.record)
            records.append(result.record.to_json())
            stats.append(result.stats.to_json())
            indices.append(result.indices)
        path = ckpt.write_checkpoint(seg.out.parent, index=seg.index, engine=engine, log=log, run_id=run_id,
                                     base_model_digest=self.manifest["base_model"]["digest"], segment_start=a,
                                     epsilon=epsilon_after(engine.plan, b), out=seg.out,
                                     layout=ckpt.adapter_layout(self.manifest))
        stored = CheckpointManifest.decode((path / MANIFEST_NAME).read_bytes(), source=str(path))
        return {"checkpoint_digest": str(stored.digest()), "index": seg.index, "indices": indices,
                "records": records, "stats": stats,
                "weights_digest": str(stored.file(ckpt.ADAPTER_FILE).digest)}

    def _reset(self) -> None:
        """The engine exactly as right after LoRA init (checkpoint 0): initial adapter, fresh optimizer."""
        import torch

        from training.model import load_adapter_state

        engine = self.engine
        load_adapter_state(engine.peft_model, self.initial_adapter)
        engine.base_optimizer.state.clear()
        if engine.accountant is not None:
            engine.accountant.history = []
        engine.next_step = 0
        torch.set_rng_state(self.initial_rng)
        engine.sync_guard()


def replay(request: ReplayRequest) -> dict[str, Any]:
    """Run every segment of the request; the result document (per-segment errors included)."""
    from training.engine import resource_shortage

    replayer = Replayer(request)
    segments = []
    for seg in request.segments:
        try:
            segments.append(replayer.segment(seg))
        except ProvenanceError as exc:
            segments.append({"error": one_line(exc), "index": seg.index})
        except Exception as exc:  # a crafted checkpoint (wrong shapes, dtypes) must fail its segment, not the worker
            short = resource_shortage(exc)
            if short is not None:  # this machine's limits: the segment is undecided, not failed
                segments.append({"error": f"this machine ran out of {short} ({type(exc).__name__})",
                                 "index": seg.index, "resource": True})
            else:
                segments.append({"error": f"cannot replay: {type(exc).__name__}: {one_line(exc, 300)}",
                                 "index": seg.index})
    shards = replayer.engine.shard_threads  # how the shards really ran (rank order after a fallback)
    replayer.environment["shard_threads"] = len(shards.maths) if shards is not None and shards.active else 1
    return {"environment": replayer.environment, "format": RESULT_FORMAT, "segments": segments}


def write_result(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(canonical.encode(document) + b"\n")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m training.replay --request REQ.json --result RES.json` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m training.replay")
    parser.add_argument("--request", required=True, type=Path)
    parser.add_argument("--result", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        try:
            doc = json.loads(args.request.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"{args.request}: cannot read the request ({exc.strerror})") from None
        except (ValueError, RecursionError):
            raise FormatError(f"{args.request}: not a JSON document") from None
        request = parse_request(doc)
        from training.model import quiet_libraries

        quiet_libraries()
        result = replay(request)
        write_result(args.result, result)
    except ProvenanceError as exc:
        print(f"replay: error: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0


def request_for_run(run_dir: Path, *, base_model: Path, data: Path, out: Path, indices: Sequence[int] | None = None,
                    secrets: Path | None = None) -> ReplayRequest:
    """A request replaying checkpoints `indices` (default: all, 0 rebuilt from the base model) of a local run
    directory into `out/<index>`: what a trainer or auditor holding the run directory asks for."""
    from provenance import merkle
    from provenance.steplog import StepLog
    from training.checkpoint import STATE_FILE, checkpoint_dir, complete_checkpoints

    def log_size(index: int) -> int:
        path = checkpoint_dir(run_dir, index) / STATE_FILE
        return int(canonical.decode(path.read_bytes(), source=str(path))["log_size"])

    with StepLog.open(run_dir, create=False) as log:
        leaves = log.leaf_hashes
    segments = []
    for j in complete_checkpoints(run_dir) if indices is None else indices:
        a = log_size(j - 1) if j else 0
        rng = merkle.CompactRange()
        for leaf in leaves[:a]:
            rng.append(leaf)
        segments.append(SegmentRequest(j, checkpoint_dir(run_dir, j - 1) if j else None, (a, log_size(j)), a,
                                       rng.hashes, out / f"{j:06d}"))
    recorded = load_anchor(run_dir)  # prov.keys.v1 runs: the registration block the run recorded (keys.json)
    return ReplayRequest(run_dir / "run.json", base_model, data, secrets or run_dir / "secrets.json",
                         tuple(segments), None if recorded is None else recorded[0])


def result_digests(result: dict[str, Any]) -> dict[int, Digest]:
    """Checkpoint digest of each replayed segment that succeeded (a convenience for callers and tests)."""
    return {int(s["index"]): Digest.parse(s["checkpoint_digest"]) for s in result["segments"] if "error" not in s}


if __name__ == "__main__":
    sys.exit(main())
