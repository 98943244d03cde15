"""Issue 5 benchmarks: provenance overhead of training, DP-SGD step cost vs non-private, peak memory of both.

- Provenance overhead: the same training run (tiny Llama, batch 16 x 128 tokens, 2 threads) end to end through
  `training.trainer.train`, with full provenance (batch hashing, step log with fsync per step, checkpoints with
  PRV ε, local store, anchoring on the in-process py-evm chain through the outbox, final flush) vs
  `provenance=False` (identical steps, nothing recorded). Runs alternate; medians. Target <= 1.03.
- DP overhead: one DP-SGD LoRA step (per-sample gradients, clipping, noise) vs one non-private LoRA step on the
  same model and the same batch, steps interleaved. Target <= 1.3.
- Peak memory: each mode in its own fresh process, a watcher thread samples RSS every millisecond while stepping;
  reported as the peak above the RSS after set-up (the activations, per-sample gradients, noise), and the peak.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import row, show

THREADS = 1  # the machines benchmarks share are often busy: one thread avoids OpenMP spin-wait blow-ups
BATCH = 16
SEQ = 128
# A small Llama (hidden 256, 4 layers; ~4M parameters), so one step costs what FACTS.md measured for a small model
# rather than the tiny test model's few milliseconds.
SIZES = {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 8,
         "num_key_value_heads": 4}


def _model(root: Path) -> Path:
    from training.tiny import build_tiny_model

    model = root / "model"
    if not (model / "config.json").exists():
        build_tiny_model(model, sizes=SIZES)
    return model


def _config(model: Path, out: Path | None, steps: int, every: int, *, anchor: bool) -> Any:
    from training.config import TrainConfig, with_overrides

    return with_overrides(TrainConfig(), {
        "model.path": str(model), "out": None if out is None else str(out), "data.max_length": SEQ,
        "training.batch_size": BATCH, "training.steps": steps, "training.checkpoint_every": every,
        "training.threads": THREADS, "anchor.enabled": anchor, "anchor.chain": "tester", "anchor.store": "local",
        "anchor.flush_timeout": 300.0,
    })


def bench_provenance(root: Path, *, steps: int, every: int, rounds: int) -> dict[str, Any]:
    from provenance.secrets import Secrets
    from training.trainer import train

    model = _model(root)
    os.environ["PROV_HOME"] = str(root / "home")
    on: list[float] = []
    off: list[float] = []
    train(_config(model, None, 2, 2, anchor=False), provenance=False, quiet=True)  # warm caches and kernels
    for i in range(rounds):
        for record, out in ((True, on), (False, off)):
            cfg = _config(model, root / f"run-{i}" if record else None, steps, every, anchor=record)
            t0 = time.perf_counter()
            result = train(cfg, secrets=Secrets.generate(), provenance=record, quiet=True)
            out.append(time.perf_counter() - t0)
            if record:
                assert result.anchored, "anchoring did not finish"
    a, b = sorted(on)[len(on) // 2], sorted(off)[len(off) // 2]
    return row(f"training wall time, {steps} steps, checkpoint every {every}, full provenance + in-process chain "
               "vs provenance off", a, b, unit="s", target="<= 1.03",
               note=f"(per step {a / steps * 1e3:.1f} ms vs {b / steps * 1e3:.1f} ms; best-of-{rounds} ratio "
                    f"{min(on) / min(off):.3f}; all runs on {[round(x, 2) for x in on]} off "
                    f"{[round(x, 2) for x in off]})")


def _engines(model: Path, modes: tuple[bool, ...] = (True, False)) -> list[Any]:
    from provenance.dataset import load_examples
    from provenance.secrets import Secrets
    from training import determinism
    from training.data import DEMO_DATA
    from training.engine import load_engine
    from training.plan import resolve

    determinism.apply_threads(THREADS)
    secrets = Secrets.generate()
    examples = load_examples(DEMO_DATA)
    engines = []
    for enabled in modes:
        cfg = _config(model, None, 10_000, 10_000, anchor=False)
        from training.config import with_overrides

        cfg = with_overrides(cfg, {"dp.enabled": enabled})
        manifest = {"training": resolve(cfg, dataset_size=len(examples)).to_json(), "dataset": {"max_length": SEQ},
                    "determinism": determinism.settings(threads=THREADS, dtype="float32",
                                                        attn_implementation="eager")}
        engines.append(load_engine(manifest, secrets, model, examples=examples, record=False))
    return engines


def bench_dp_step(root: Path, *, steps: int) -> dict[str, Any]:
    dp, plain = _engines(_model(root))
    indices = list(range(BATCH))
    times: dict[str, list[float]] = {"dp": [], "plain": []}
    batch = dp.batches(0, indices)
    for k in range(steps + 3):
        for name, engine in (("dp", dp), ("plain", plain)):
            t0 = time.perf_counter()
            engine.step(k, indices=indices, batch=batch)
            if k >= 3:  # the first steps warm kernels and allocators
                times[name].append(time.perf_counter() - t0)
    a, b = (sorted(times[n])[len(times[n]) // 2] for n in ("dp", "plain"))
    return row(f"LoRA step on batch {BATCH} x {SEQ} tokens, DP-SGD vs non-private", a * 1e3, b * 1e3, unit="ms",
               target="<= 1.3")


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _memory_child(mode: str, root: Path, steps: int) -> None:
    """Peak RSS while stepping, above the RSS after set-up, sampled every millisecond by a watcher thread."""
    import threading

    (engine,) = _engines(_model(root), (mode == "dp",))
    indices = list(range(BATCH))
    batch = engine.batches(0, indices)
    engine.step(0, indices=indices, batch=batch)  # first-step allocations (optimizer state) count as set-up
    base = _rss_kib()
    peak = [base]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_kib())
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    for k in range(1, steps + 1):
        engine.step(k, indices=indices, batch=batch)
    done.set()
    watcher.join()
    print(json.dumps({"base_kib": base, "peak_kib": peak[0],
                      "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def bench_memory(root: Path, *, steps: int) -> dict[str, Any]:
    _model(root)
    out = {}
    for mode in ("dp", "plain"):
        proc = subprocess.run([sys.executable, __file__, "--memory-child", mode, str(root), str(steps)],
                              capture_output=True, text=True, check=True)
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    growth = {m: (v["peak_kib"] - v["base_kib"]) / 1024 for m, v in out.items()}
    peak = {m: v["peak_kib"] / 1024 for m, v in out.items()}
    return row("peak RSS growth during a step above the trained-model baseline, DP-SGD vs non-private "
               "(fresh process each)", growth["dp"], growth["plain"], unit="MiB",
               note=f"(peak RSS while stepping {peak['dp']:.0f} MiB vs {peak['plain']:.0f} MiB)")


def run(quick: bool = False) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = [bench_dp_step(root, steps=10 if quick else 30), bench_memory(root, steps=5 if quick else 10)]
        rows.append(bench_provenance(root, steps=20 if quick else 60, every=10 if quick else 20,
                                     rounds=1 if quick else 5))
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--memory-child":
        _memory_child(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))
    else:
        show(run(quick="--quick" in sys.argv))
