"""The replay protocol: how the verifier (no torch) has training segments re-run by a trainer it does not import.

The verifier writes a request file and runs the replay worker in a subprocess whose environment carries the run's
recorded determinism settings (`provenance.determinism.replay_environment`: the CPU capability is fixed when torch
is imported, so it must be set before the worker starts). The worker is found through the `prov.replay` entry-point
group (the `train` extra registers `training.replay`); `provenance` never imports `training`.

Request (`prov.replay-request.v1`, JSON): the verified run manifest, the base model, the data, the secrets, and
segments. Each segment names the (already verified) checkpoint to start from — or null to rebuild checkpoint 0 from
the base model, the LoRA config and seed and a fresh optimizer —, the index j of the checkpoint to rebuild, the steps
[a, b) to run, the step log's compact range at a (so the worker can write log roots and the steps.jsonl segment
without the run's log), and a directory to write the rebuilt checkpoint into. The worker writes the *complete*
checkpoint directory with the trainer's own writer, so the verifier compares the **checkpoint digest** (every byte of
adapter, optimizer, RNG, sampler, accountant and log segment), not only the weights.

Result (`prov.replay-result.v1`): the environment the worker actually ran in, and per segment the rebuilt
checkpoint and weights digests, the replayed step records, their private statistics and sampled indices — or a
one-line error for that segment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from provenance import canonical
from provenance.errors import FormatError, ProvenanceError, UsageError
from provenance.hashing import Digest
from provenance.records import AnyStepRecord, StepStats, step_record_from_json

REQUEST_FORMAT = "prov.replay-request.v1"
RESULT_FORMAT = "prov.replay-result.v1"
ENTRY_POINT_GROUP = "prov.replay"
DISTRIBUTION = "prov"


class ReplayUnavailable(ProvenanceError):
    """No replay worker is installed here (the `train` extra is missing)."""


class WorkerFailed(ProvenanceError):
    """The replay worker could not run the request at all (its one-line reason is in the message)."""


@dataclass(frozen=True)
class SegmentJob:
    """Rebuild checkpoint `index` from `start` (None: from the base model) by running steps [a, b)."""

    start: Path | None
    index: int
    steps: tuple[int, int]
    log_hashes: tuple[bytes, ...]  # the step log's compact range at size steps[0]
    out: Path

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "log": {"hashes": [h.hex() for h in self.log_hashes], "size": self.steps[0]},
                "out": str(self.out.resolve()), "start": None if self.start is None else str(self.start.resolve()),
                "steps": list(self.steps)}


@dataclass(frozen=True)
class SegmentOutcome:
    """What the worker rebuilt for one segment (or why it could not)."""

    index: int
    checkpoint_digest: Digest | None = None
    weights_digest: Digest | None = None
    records: tuple[AnyStepRecord, ...] = ()
    stats: tuple[StepStats, ...] = ()
    indices: tuple[tuple[int, ...], ...] = ()
    error: str | None = None
    resource: bool = False  # the error was this machine's (out of memory or disk), not the segment's


@dataclass(frozen=True)
class WorkerResult:
    environment: dict[str, Any] = field(default_factory=dict)
    segments: tuple[SegmentOutcome, ...] = ()

    def outcome(self, index: int) -> SegmentOutcome:
        for item in self.segments:
            if item.index == index:
                return item
        return SegmentOutcome(index, error="the worker returned nothing for this segment")


def find_worker() -> str:
    """The module of prov's own replay worker (entry point group `prov.replay` of the `prov` distribution: another
    installed package cannot substitute its own)."""
    found = sorted((ep for ep in entry_points(group=ENTRY_POINT_GROUP)
                    if ep.dist is not None and ep.dist.name == DISTRIBUTION), key=lambda ep: ep.name)
    if not found:
        raise ReplayUnavailable("no replay worker is installed: replay needs the train extra "
                                "(pip install torch==2.13.0 'prov[train]')")
    return str(found[0].value).split(":", 1)[0]


def _outcome(value: Any) -> SegmentOutcome:
    if not isinstance(value, dict) or not isinstance(value.get("index"), int):
        raise FormatError("replay result: a segment needs an integer index")
    index = value["index"]
    if value.get("error") is not None:
        return SegmentOutcome(index, error=" ".join(str(value["error"]).split()),
                              resource=value.get("resource") is True)
    try:
        return SegmentOutcome(
            index,
            checkpoint_digest=Digest.parse(value["checkpoint_digest"]),
            weights_digest=Digest.parse(value["weights_digest"]),
            records=tuple(step_record_from_json(r) for r in value["records"]),
            stats=tuple(StepStats.from_json(s, source="replay result") for s in value.get("stats", [])),
            indices=tuple(tuple(int(i) for i in row) for row in value.get("indices", [])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"replay result: malformed segment {index} ({type(exc).__name__}: {exc})") from None


def parse_result(data: bytes) -> WorkerResult:
    doc = canonical.load_json(data, source="replay result")
    if not isinstance(doc, dict) or doc.get("format") != RESULT_FORMAT:
        raise FormatError(f"replay result: not a {RESULT_FORMAT} document")
    env = doc["environment"] if isinstance(doc.get("environment"), dict) else {}
    return WorkerResult(environment=env, segments=tuple(_outcome(s) for s in doc.get("segments") or []))


def run_worker(*, manifest: Path, base_model: Path, data: Path | None, secrets: Path | None,
               jobs: Sequence[SegmentJob],
               env: Mapping[str, str], workdir: Path, timeout: float | None = None,
               keys_anchor: bytes | None = None) -> WorkerResult:
    """Run `jobs` in one replay worker process (model loaded once) with environment `env`; return its result.
    `keys_anchor`: the registration's block hash, read from the chain, for a run with prov.keys.v1 keys (optional
    request field `keys_anchor`, 0x-hex or null).

    `data` and `secrets` may be None when only checkpoint 0 is rebuilt (it needs neither)."""
    if not jobs:
        return WorkerResult()
    module = find_worker()
    request = workdir / "replay-request.json"
    result = workdir / "replay-result.json"
    def absolute(path: Path | None) -> str | None:  # the worker runs in `workdir`, not the caller's directory
        return None if path is None else str(Path(path).resolve())

    request.write_text(json.dumps({
        "base_model": absolute(base_model), "data": absolute(data), "format": REQUEST_FORMAT,
        "manifest": absolute(manifest), "secrets": absolute(secrets),
        "keys_anchor": None if keys_anchor is None else "0x" + keys_anchor.hex(),
        "segments": [job.to_json() for job in jobs],
    }, sort_keys=True), encoding="utf-8")
    result.unlink(missing_ok=True)
    try:
        # -I: isolated mode, so neither the working directory nor PYTHON* variables can put other code on the path
        done = subprocess.run([sys.executable, "-I", "-m", module, "--request", str(request), "--result",
                               str(result)], env=dict(env), capture_output=True, text=True, timeout=timeout,
                              check=False, cwd=workdir)
    except subprocess.TimeoutExpired:
        raise WorkerFailed(f"the replay worker did not finish within {timeout:.0f} s") from None
    if not result.is_file():
        lines = [line for line in (done.stderr or "").splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit status {done.returncode}"
        raise WorkerFailed(f"the replay worker failed: {' '.join(why.split())}")
    return parse_result(result.read_bytes())


def worker_timeout() -> float | None:
    """Seconds a replay may take before it is abandoned (`PROV_REPLAY_TIMEOUT`; unset: no limit)."""
    text = os.environ.get("PROV_REPLAY_TIMEOUT")
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"PROV_REPLAY_TIMEOUT must be a number of seconds, not {text!r}") from None
