"""Trainer benchmarks (issues 12, 13, 15), each a ratio measured side by side in one run.

Model: the bench model below (a Llama of hidden 256, 4 layers, ~4M parameters, built locally) for every row: on
this 2-core machine the `small` model of `prov init-model --size small` (~86M) takes minutes per logical batch of
256, so it is exercised by bench/device-check on a GPU instead. One thread per process (shared, busy machines).

- noise generation (`prov.noise.v2`) vs one DP step, batch 16 x 128 tokens (target <= 5%);
- a DP step with the v2 noise vs the same step with the v1 noise (torch.Generator normals), interleaved;
- training with full provenance (batch commitments, step log fsync'd every step, stats file, checkpoints, PRV ε,
  anchoring on the in-process chain through the outbox) vs `provenance=False` (target <= 1.03);
- DP step vs non-private, logical batch 256 in micro-batches of 16 (64 tokens) (target <= 1.5);
- peak memory at logical batch 1024 vs 64, micro-batches of 16, each in a fresh process (target <= 1.1);
- 2-process torchrun vs 1 process, examples per second (steps only: checkpoint 0 to the last, so start-up is not
  counted); replay of the 2-process run in one process (the worker, start-up included) vs training it;
- portable determinism profile (AVX2 kernels) vs native kernels, one DP step, each in a fresh process (report);
- whole-checkpoint replay (the worker rebuilding every checkpoint directory) vs training the same steps, one
  process each, model load included (target <= 1.1).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import interleaved, row, show

THREADS = 1  # the machines benchmarks share are often busy: one thread avoids OpenMP spin-wait blow-ups
BATCH = 16
SEQ = 128
SIZES = {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 8,
         "num_key_value_heads": 4}
ROOT = Path(__file__).resolve().parents[1]


def _model(root: Path) -> Path:
    from training.tiny import build_tiny_model

    model = root / "model"
    if not (model / "config.json").exists():
        build_tiny_model(model, sizes=SIZES)
    return model


def _data(root: Path, size: int = 4096) -> Path:
    """The demo texts repeated (numbered) to `size` examples, so a logical batch of 1024 can be sampled."""
    from training.data import DEMO_DATA

    path = root / f"data-{size}.jsonl"
    if not path.exists():
        lines = [json.loads(x)["text"] for x in DEMO_DATA.read_text().splitlines() if x.strip()]
        path.write_text("".join(json.dumps({"text": f"{i}: {lines[i % len(lines)]}"}) + "\n" for i in range(size)))
    return path


def _config(model: Path, out: Path | None, steps: int, every: int, *, anchor: bool, **extra: Any) -> Any:
    from training.config import TrainConfig, with_overrides

    return with_overrides(TrainConfig(), {
        "model.path": str(model), "out": None if out is None else str(out), "data.max_length": SEQ,
        "training.batch_size": BATCH, "training.steps": steps, "training.checkpoint_every": every,
        "training.threads": THREADS, "anchor.enabled": anchor, "anchor.chain": "tester", "anchor.store": "local",
        "anchor.flush_timeout": 300.0, "determinism.profile": "native", **extra,
    })


def _engines(model: Path, modes: tuple[bool, ...] = (True, False), **extra: Any) -> list[Any]:
    """Engines as the trainer builds them (no run directory), DP on/off, over the demo data unless `data.path`."""
    from provenance.secrets import Secrets
    from training import determinism
    from training.config import with_overrides
    from training.data import records_for_config
    from training.engine import load_engine
    from training.plan import resolve

    determinism.apply_threads(THREADS)
    secrets = Secrets.generate()
    engines = []
    for enabled in modes:
        cfg = with_overrides(_config(model, None, 10_000, 10_000, anchor=False, **extra), {"dp.enabled": enabled})
        records = records_for_config(cfg)
        manifest = {"training": resolve(cfg, dataset_size=len(records)).to_json(),
                    "dataset": {"max_length": cfg.data.max_length},
                    "determinism": determinism.settings(profile="native", threads=THREADS, dtype="float32",
                                                        attn_implementation="eager")}
        engines.append(load_engine(manifest, secrets, model, examples=records, record=False))
    return engines


def _median_steps(engines: dict[str, Any], indices: list[int], *, steps: int, warm: int = 1) -> dict[str, float]:
    """Median step time of each engine on the same batch, steps interleaved across engines."""
    times: dict[str, list[float]] = {name: [] for name in engines}
    batch = next(iter(engines.values())).batches(0, indices)
    for k in range(steps + warm):
        for name, engine in engines.items():
            t0 = time.perf_counter()
            engine.step(k, indices=indices, batch=batch)
            if k >= warm:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_noise(root: Path, *, steps: int) -> list[dict[str, Any]]:
    import torch

    import training.engine
    from training.noise import step_noise

    (dp,) = _engines(_model(root), (True,))
    (old,) = _engines(_model(root), (True,))

    def v1_noise(secrets: Any, step: int, *, count: int, std: float, dtype: torch.dtype) -> torch.Tensor:
        gen = torch.Generator()  # prov.noise.v1: what Opacus' DPOptimizer drew from a seeded torch.Generator
        gen.manual_seed(int.from_bytes(secrets.noise_key(step)[:8], "big"))
        return torch.normal(mean=0.0, std=std, size=(count,), generator=gen).to(dtype)

    class OldNoise:  # the same engine with v1 noise: swap the module-level function around its steps
        def step(self, k: int, **kw: Any) -> Any:
            saved = training.engine.step_noise
            training.engine.step_noise = v1_noise  # type: ignore[assignment]
            try:
                return old.step(k, **kw)
            finally:
                training.engine.step_noise = saved

        def batches(self, k: int, indices: list[int]) -> Any:
            return old.batches(k, indices)

    medians = _median_steps({"v2": dp, "v1": OldNoise()}, list(range(BATCH)), steps=steps)
    noise_time, _ = interleaved(
        lambda: step_noise(dp.secrets, 7, count=dp.math.count, std=1.0, dtype=torch.float32), lambda: None,
        rounds=max(5, steps))
    return [
        row(f"noise generation (prov.noise.v2, {dp.math.count:,} coordinates) vs one DP step (batch {BATCH} x {SEQ})",
            noise_time * 1e3, medians["v2"] * 1e3, unit="ms", target="<= 0.05"),
        row(f"DP step (batch {BATCH} x {SEQ}) with v2 noise (Philox, 4 normals/coordinate) vs v1 noise "
            "(torch.Generator)", medians["v2"] * 1e3, medians["v1"] * 1e3, unit="ms", target="report"),
    ]


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
    a, b = statistics.median(on), statistics.median(off)
    return row(f"training wall time, {steps} steps, checkpoint every {every}, full provenance + in-process chain "
               "vs provenance off", a, b, unit="s", target="<= 1.03",
               note=f"(per step {a / steps * 1e3:.1f} ms vs {b / steps * 1e3:.1f} ms; best-of-{rounds} ratio "
                    f"{min(on) / min(off):.3f}; runs on {[round(x, 2) for x in on]} off {[round(x, 2) for x in off]})")


def bench_large_batch(root: Path, *, steps: int) -> dict[str, Any]:
    extra = {"data.path": str(_data(root)), "data.max_length": 64, "training.physical_batch_size": 16}
    dp, plain = _engines(_model(root), **extra)
    medians = _median_steps({"dp": dp, "plain": plain}, list(range(256)), steps=steps)
    return row("logical batch 256 x 64 tokens in micro-batches of 16, DP-SGD step vs non-private", medians["dp"],
               medians["plain"], unit="s", target="<= 1.5")


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _memory_child(batch: int, root: Path) -> None:
    """Peak RSS while stepping a logical batch of `batch` (micro-batches of 16), sampled every millisecond."""
    import threading

    extra = {"data.path": str(_data(root)), "data.max_length": 32, "training.physical_batch_size": 16}
    (engine,) = _engines(_model(root), (True,), **extra)
    indices = list(range(batch))
    engine.step(0, indices=indices, batch=engine.batches(0, indices))  # first-step allocations count as set-up
    base = _rss_kib()
    peak = [base]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_kib())
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    engine.step(1, indices=indices, batch=engine.batches(1, indices))
    done.set()
    watcher.join()
    print(json.dumps({"base_kib": base, "peak_kib": peak[0],
                      "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def bench_memory(root: Path) -> dict[str, Any]:
    _model(root)
    _data(root)
    out = {}
    for batch in (1024, 64):
        proc = subprocess.run([sys.executable, __file__, "--memory-child", str(batch), str(root)],
                              capture_output=True, text=True, check=True)
        out[batch] = json.loads(proc.stdout.strip().splitlines()[-1])
    growth = {b: (v["peak_kib"] - v["base_kib"]) / 1024 for b, v in out.items()}
    return row("peak RSS of a DP step, logical batch 1024 vs 64 (32 tokens, micro-batches of 16, fresh process "
               "each)", out[1024]["maxrss_kib"] / 1024, out[64]["maxrss_kib"] / 1024, unit="MiB", target="<= 1.1",
               note=f"(growth during the step above the post-set-up RSS: {growth[1024]:.1f} vs {growth[64]:.1f} MiB)")


def _prov_train(root: Path, name: str, *, nproc: int, steps: int) -> tuple[float, Path]:
    config = root / "torchrun.toml"
    config.write_text(f'[training]\nsteps = {steps}\ncheckpoint_every = 3\nthreads = 1\nbatch_size = 32\n'
                      f'physical_batch_size = 16\n[data]\nmax_length = 64\n[determinism]\nprofile = "native"\n'
                      f'[anchor]\nenabled = false\n')
    run = root / name
    env = {**os.environ, "PROV_HOME": str(root / "home")}
    env.pop("OMP_NUM_THREADS", None)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "provenance", "train", str(config), "--model", str(_model(root)),
                    "--data", str(_data(root)), "--out", str(run), "--nproc", str(nproc), "--quiet"], env=env,
                   check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - t0, run


def _replay_wall(root: Path, run: Path, name: str) -> float:
    from training.determinism import environment_for
    from training.replay import request_for_run
    from training.runinfo import read_manifest

    request = request_for_run(run, base_model=_model(root), data=_data(root), out=root / name)
    path = root / f"{name}.json"
    path.write_text(json.dumps(request.to_json()))
    env = {**os.environ, **environment_for(read_manifest(run))}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "training.replay", "--request", str(path), "--result",
                    str(root / f"{name}-result.json")], env=env, check=True, capture_output=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    result = json.loads((root / f"{name}-result.json").read_text())
    from provenance.manifest import hash_directory

    for seg in result["segments"]:
        committed = hash_directory(run / "checkpoints" / f"{seg['index']:06d}").digest()
        assert seg.get("checkpoint_digest") == str(committed), f"replay of {run} segment {seg['index']} differs"
    return wall


def _training_seconds(run: Path) -> float:
    """Seconds from checkpoint 0 (written just before step 0) to the last checkpoint: the steps alone, without
    process start-up or model loading (from the checkpoint manifests' modification times)."""
    from provenance.manifest import MANIFEST_NAME

    points = sorted((run / "checkpoints").iterdir())
    return (points[-1] / MANIFEST_NAME).stat().st_mtime - (points[0] / MANIFEST_NAME).stat().st_mtime


def bench_torchrun(root: Path, *, steps: int) -> list[dict[str, Any]]:
    walls: dict[int, float] = {}
    runs: dict[int, Path] = {}
    for nproc in (2, 1):
        walls[nproc], runs[nproc] = _prov_train(root, f"tr-{nproc}", nproc=nproc, steps=steps)
    seconds = {n: _training_seconds(runs[n]) for n in (2, 1)}
    examples = {n: sum(json.loads(line)["record"]["examples"] for line in (runs[n] / "steps.jsonl").open())
                for n in (2, 1)}
    replay = _replay_wall(root, runs[2], "replay-2proc")
    return [
        row(f"examples/s, 2-process torchrun (gloo, 1 thread each) vs 1 process (1 thread), expected logical batch "
            f"32 x 64 tokens, {steps} steps", examples[2] / seconds[2], examples[1] / seconds[1], unit="ex/s",
            target="report", note=f"(steps only, from checkpoint 0 to the last: {seconds[2]:.1f} s vs "
                                  f"{seconds[1]:.1f} s; whole runs {walls[2]:.1f} s vs {walls[1]:.1f} s incl. "
                                  "start-up)"),
        row(f"replay of the 2-process run ({steps} steps) in one process (worker, every checkpoint) vs training it "
            "with torchrun", replay, walls[2], unit="s", target="<= 1.2",
            note=f"(start-up included on both sides; the worker computes the ranks' shards concurrently, each with "
                 f"one rank's thread count as bitwise equality requires: steps alone took {seconds[2]:.1f} s on 2 "
                 "processes)"),
    ]


def _profile_child(root: Path, steps: int) -> None:
    (dp,) = _engines(_model(root), (True,))
    medians = _median_steps({"dp": dp}, list(range(BATCH)), steps=steps)
    from training.determinism import cpu_capability

    print(json.dumps({"step_s": medians["dp"], "capability": cpu_capability()}))


def bench_profile(root: Path, *, steps: int, rounds: int) -> dict[str, Any]:
    from training.determinism import profile_environment

    _model(root)
    out: dict[str, list[dict[str, Any]]] = {"portable": [], "native": []}
    for _ in range(rounds):  # alternate fresh processes so load drift on a shared machine hits both alike
        for profile in ("portable", "native"):
            env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR",
                                                                   "ONEDNN_MAX_CPU_ISA")}
            env.update(profile_environment(profile))
            proc = subprocess.run([sys.executable, __file__, "--profile-child", str(root), str(steps)], env=env,
                                  capture_output=True, text=True, check=True)
            out[profile].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    best = {p: min(r["step_s"] for r in runs) for p, runs in out.items()}
    return row(f"DP step (batch {BATCH} x {SEQ}), portable profile ({out['portable'][0]['capability']} kernels) vs "
               f"native ({out['native'][0]['capability']})", best["portable"] * 1e3, best["native"] * 1e3, unit="ms",
               target="report", note=f"(fresh processes, alternating; best median of {rounds} each)")


def bench_replay(root: Path, *, steps: int, rounds: int) -> dict[str, Any]:
    from provenance.secrets import Secrets
    from training.data import DEMO_DATA
    from training.replay import replay, request_for_run
    from training.trainer import train

    model = _model(root)
    os.environ["PROV_HOME"] = str(root / "home")
    secrets = Secrets.generate()
    n = [0]

    def train_once() -> None:
        n[0] += 1
        train(_config(model, root / f"replay-run-{n[0]}", steps, 4, anchor=False), secrets=secrets, quiet=True)

    train_once()
    run = root / "replay-run-1"

    def replay_once() -> None:
        n[0] += 1
        out = replay(request_for_run(run, base_model=model, data=DEMO_DATA, out=root / f"replayed-{n[0]}"))
        assert all("error" not in s for s in out["segments"])

    a, b = interleaved(replay_once, train_once, rounds=rounds)
    return row(f"whole-checkpoint replay of {steps} steps (every checkpoint rebuilt, model load included) vs "
               "training them", a, b, unit="s", target="<= 1.1")


def run_small() -> list[dict[str, Any]]:
    """The issue's rows on the `small` model (~86M parameters, `prov init-model --size small`), sized to finish in
    about ten minutes on 2 cores: fewer steps, 32-token sequences for the per-step rows. Not part of `bench/run`
    (`python -m bench.bench_train --small` runs it); its rows are named "[small model]"."""
    global SIZES, SEQ
    from training.tiny import MODEL_SIZES

    SIZES, SEQ = dict(MODEL_SIZES["small"]), 32
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = bench_noise(root, steps=2)
        rows.append(bench_large_batch(root, steps=1))
        rows.append(bench_memory(root))
        rows.append(bench_provenance(root, steps=6, every=3, rounds=1))
        rows += bench_torchrun(root, steps=3)
    for item in rows:
        item["name"] = "[small model] " + item["name"]
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = bench_noise(root, steps=5 if quick else 15)
        rows.append(bench_large_batch(root, steps=1 if quick else 3))
        rows.append(bench_memory(root))
        rows.append(bench_replay(root, steps=8 if quick else 12, rounds=1 if quick else 3))
        rows.append(bench_profile(root, steps=3 if quick else 8, rounds=1 if quick else 2))
        rows += bench_torchrun(root, steps=6 if quick else 12)
        # registration waits for the chain before step 0 (~0.5 s on the in-process chain): a fixed cost that the
        # target amortises over a run of realistic length, so the full run trains 60 steps
        rows.append(bench_provenance(root, steps=10 if quick else 60, every=5 if quick else 20,
                                     rounds=1 if quick else 3))
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--memory-child":
        _memory_child(int(sys.argv[2]), Path(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "--profile-child":
        _profile_child(Path(sys.argv[2]), int(sys.argv[3]))
    elif "--small" in sys.argv:
        show(run_small())
    else:
        show(run(quick="--quick" in sys.argv))
