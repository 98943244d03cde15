"""Issue 2 benchmarks: file hashing vs hashlib, Merkle root vs bare SHA-256 calls, step-log append cost."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import interleaved, row, show
from provenance import merkle
from provenance.hashing import Digest, hash_file
from provenance.records import StepRecord
from provenance.steplog import StepLog


def bench_file_hash(size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.bin"
        block = os.urandom(1 << 20)
        with path.open("wb") as f:
            for _ in range(size >> 20):
                f.write(block)

        def plain() -> None:
            with path.open("rb") as f:
                hashlib.file_digest(f, "sha256")

        plain()  # warm the page cache so both read from memory
        ours, base = interleaved(lambda: hash_file(path), plain, rounds=3)
    return row(f"file hashing throughput, {size >> 20} MiB file, vs hashlib.file_digest", size / ours / 1e9,
               size / base / 1e9, unit="GB/s", target=">= 0.9")


def bench_merkle(n: int) -> dict[str, Any]:
    items = [i.to_bytes(8, "big") for i in range(n)]
    sha = hashlib.sha256
    leaf_inputs = [b"\x00" + x for x in items]
    node_input = b"\x01" + b"\x11" * 64

    def bare() -> None:
        # The 2n-1 SHA-256 calls a tree of n leaves needs, on inputs of the same sizes, and nothing else.
        [sha(x).digest() for x in leaf_inputs]
        [sha(node_input).digest() for _ in range(n - 1)]

    ours, base = interleaved(lambda: merkle.root_of_data(items), bare, rounds=3)
    return row(f"Merkle root of {n:,} leaves vs the bare {2 * n - 1:,} SHA-256 calls", ours, base,
               unit="s", target="<= 1.5")


def _record(i: int) -> StepRecord:
    return StepRecord(step=i, batch=Digest.of(i.to_bytes(8, "big")), examples=16, lr=5e-4,
                      noise_index=i, stats=Digest.of(i.to_bytes(8, 'big') + b's'))


def bench_steplog_append(n: int = 2000) -> tuple[float, float]:
    """Seconds per append with an fsync every append (the default) and with fsync only at sync()."""
    out = []
    for fsync_every in (1, 0):
        with tempfile.TemporaryDirectory() as tmp:
            log = StepLog.open(tmp, fsync_every=fsync_every)
            records = [_record(i) for i in range(n)]
            t0 = time.perf_counter()
            for r in records:
                log.append(r)
            out.append((time.perf_counter() - t0) / n)
            log.close()
    return out[0], out[1]


def tiny_step_seconds() -> float | None:
    """Median seconds of one DP-SGD step of the real trainer on bench_train's model and batch (the same step the
    training benchmarks time), or None when the training extra is not installed."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    from bench.bench_train import BATCH, _engines, _model

    with tempfile.TemporaryDirectory() as tmp:
        (dp,) = _engines(_model(Path(tmp)), (True,))
        indices = list(range(BATCH))
        batch = dp.batches(0, indices)
        times = []
        for k in range(8):
            t0 = time.perf_counter()
            dp.step(k, indices=indices, batch=batch)
            times.append(time.perf_counter() - t0)
    return sorted(times[2:])[len(times[2:]) // 2]


def run(quick: bool = False) -> list[dict[str, Any]]:
    rows = [bench_file_hash((256 if quick else 1024) << 20), bench_merkle(100_000 if quick else 1_000_000)]
    per_append, per_append_nosync = bench_steplog_append()
    step = tiny_step_seconds()
    if step is None:
        step, note = 0.13, "(training extra absent: FACTS.md's measured 0.13 s tiny-model step used as baseline)"
    else:
        note = "(baseline: a measured DP-SGD step, batch 16 x 128 tokens, bench_train's model)"
    rows.append(row("step-log append, fsync every step, vs one training step", per_append, step,
                    unit="s", target="< 0.01", note=note))
    rows.append(row("step-log append, fsync at checkpoints only, vs one training step", per_append_nosync, step,
                    unit="s", target="< 0.01", note=note))
    return rows


if __name__ == "__main__":
    show(run(quick="--quick" in sys.argv))
