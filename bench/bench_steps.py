"""The verifier's every-step pass over a 10,000-step run (issue #12, hole 9), and the synthetic v2 runs the
verifier benchmarks (bench/bench_verify.py) are built from.

Row: `provenance._verify.data.check_steps` as `prov verify --data --secrets --base-model --replay 0` runs it (the
sampled indices, example count, lr, noise index, salted batch commitment and statistics commitment of every step,
the data tokenized with the tiny model's tokenizer) against hashing the step log. `--quick`: 2,000 steps.

Synthetic runs (10,000 real steps would take half an hour here) in the trainer's exact v2 layout: `prepare_run`
writes the real `prov.run.v2` manifest (tiny model, demo data, run id = its hash); each step record carries the
salted batch commitment of the examples its Poisson sample really picks (tokenized by the trainer's engine), the
scheduled lr and a salted commitment to plausible statistics (in `stats.jsonl`); the trainer's `write_checkpoint`
writes every checkpoint from an engine whose weights, AdamW state, accountant history `[(σ, q, n)]` and step are set
to that checkpoint's, with ε as the trainer computes it (rounded up to micro-ε in state.json).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import interleaved, row, show

THREADS = 1  # shared 2-core machines: one thread per process avoids OpenMP spin-wait blow-ups


@contextmanager
def prov_home(path: Path) -> Any:
    """Point the project state (config, runs) at `path` while benchmarking, never at the checkout's `.prov`."""
    saved = os.environ.get("PROV_HOME")
    os.environ["PROV_HOME"] = str(path)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PROV_HOME", None)
        else:
            os.environ["PROV_HOME"] = saved


def _config(model: Path, out: Path, *, steps: int, every: int, accountant: str, batch: int = 8) -> Any:
    from training.config import TrainConfig, with_overrides

    return with_overrides(TrainConfig(), {
        "model.path": str(model), "out": str(out), "training.steps": steps, "training.checkpoint_every": every,
        "training.batch_size": batch, "training.threads": THREADS, "dp.accountant": accountant,
        "anchor.enabled": False,
    })


def _epsilon(job: tuple[Any, int]) -> float | None:
    from training.plan import epsilon_after

    plan, steps = job
    return epsilon_after(plan, steps)


class SyntheticRuns:
    """Builds v2 runs of `steps` steps and `checkpoints` checkpoints (0 included) in the trainer's layout. The step
    records (the same data and secrets in every run) are made once and shared; each accountant's ε table is computed
    in 2 background processes from the start, while the untimed set-up (model, steps, runs, anchoring) goes on."""

    def __init__(self, root: Path, *, steps: int, checkpoints: int, accountants: tuple[str, ...] = ("rdp", "prv")
                 ) -> None:
        from provenance.secrets import Secrets
        from training.data import records_for_config
        from training.plan import checkpoint_steps, resolve

        self.root, self.steps = root, steps
        self.every = math.ceil(steps / (checkpoints - 1))  # the plan's points 0, k, 2k, ..., steps: `checkpoints`
        self.secrets = Secrets(bytes(range(32)), bytes(range(32, 64)))
        self.plans: dict[str, Any] = {}
        # forked before torch is imported here; no pool when no ε is needed (runs without checkpoints)
        self._pool = ProcessPoolExecutor(max_workers=2) if accountants else None
        self._futures: dict[str, list[Future[float | None]]] = {}
        for name in accountants:
            cfg = _config(root / "model", root / name, steps=steps, every=self.every, accountant=name)
            plan = self.plans[name] = resolve(cfg, dataset_size=len(records_for_config(cfg)))
            pool = self._pool
            assert pool is not None
            self._futures[name] = [pool.submit(_epsilon, (plan, n)) for n in checkpoint_steps(plan)]
        from training.tiny import build_tiny_model

        self.model = build_tiny_model(root / "model")
        self._records: list[Any] = []
        self._stats: list[Any] = []
        self._log: Any = None

    def epsilons(self, accountant: str) -> dict[int, float | None]:
        from training.plan import checkpoint_steps

        values = [f.result() for f in self._futures[accountant]]
        return dict(zip(checkpoint_steps(self.plans[accountant]), values, strict=True))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def prv_cost(self) -> tuple[float, float]:
        """Seconds of one PRV evaluation at the first checkpoint's step count and at the last one's."""
        plan = self.plans["prv"]
        return timed(_epsilon, (plan, self.every)), timed(_epsilon, (plan, self.steps))

    def prepare(self, name: str, *, accountant: str, owner: str | None) -> tuple[Path, dict[str, Any], Any]:
        """A new run directory `name` with its manifest (naming `owner`, the account the outbox will register from),
        step log and statistics file, and the trainer's engine for it; no checkpoint yet."""
        from training.data import records_for_run
        from training.engine import load_engine
        from training.rundir import prepare_run
        from training.runinfo import read_manifest, run_id_of, write_manifest

        run = prepare_run(_config(self.model, self.root / name, steps=self.steps, every=self.every,
                                  accountant=accountant), secrets=self.secrets)
        manifest = read_manifest(run)
        manifest["owner"] = owner
        manifest["run_id"] = run_id_of(manifest)
        write_manifest(run, manifest)
        engine = load_engine(manifest, self.secrets, self.model, examples=records_for_run(demo_data(), manifest))
        self._write_steps(run, engine)
        return run, manifest, engine

    def build(self, name: str, *, accountant: str, owner: str | None, seed: int) -> Path:
        """`prepare`, then every checkpoint written by the trainer's own writer."""
        from training.checkpoint import write_checkpoint
        from training.plan import checkpoint_steps

        run, manifest, engine = self.prepare(name, accountant=accountant, owner=owner)
        assert manifest["training"] == self.plans[accountant].to_json(), "the run's plan is not the one ε was for"
        points = checkpoint_steps(engine.plan)
        epsilons = self.epsilons(accountant)
        for index, done in enumerate(points):
            _set_state(engine, done, seed=seed * 1_000_003 + index)
            write_checkpoint(run, index=index, engine=engine, log=self._log, run_id=manifest["run_id"],
                             base_model_digest=manifest["base_model"]["digest"],
                             segment_start=points[index - 1] if index else 0, epsilon=epsilons[done])
        return run

    def _write_steps(self, run: Path, engine: Any) -> None:
        """The run's step log and private statistics file, byte for byte what the trainer's StepLog and StatsLog
        write for these records."""
        from provenance.steplog import LOG_NAME
        from training.checkpoint import MemoryLog
        from training.statslog import StatsLog

        if self._log is None:
            self._make_steps(engine)
            self._log = MemoryLog(size=0, hashes=())
            for record in self._records:
                self._log.append(record)
        (run / LOG_NAME).write_bytes(self._log.segment(0, self.steps))
        stats = StatsLog(run)
        for item in self._stats:
            stats.append(item)
        stats.close()

    def _make_steps(self, engine: Any) -> None:
        """Every step's record as the engine would log it: its real Poisson sample, tokenized by the engine, salted
        batch commitment, scheduled lr, noise index, and a statistics commitment to a plausible loss."""
        import numpy as np

        from provenance.batches import batch_digest
        from provenance.records import StepRecord, StepStats

        plan, rng = engine.plan, np.random.default_rng(12)
        batch_key, stats_key = self.secrets.batch_key(), self.secrets.stats_key()
        for k in range(self.steps):
            indices = engine.indices(k)
            digest = batch_digest(batch_key, step=k, indices=indices, tensors=engine.batches(k, indices),
                                  world_size=plan.world_size)
            n = len(indices)
            loss = float(2.0 + 4.0 * math.exp(-k / 2000) + rng.normal(0, 0.05)) if n else 0.0
            item = StepStats(step=k, loss=loss, clipped_fraction=int(rng.integers(0, n + 1)) / n if n else 0.0)
            self._stats.append(item)
            self._records.append(StepRecord(step=k, batch=digest, examples=n, lr=plan.lr_at(k), noise_index=k,
                                            stats=item.commitment(stats_key)))


def demo_data() -> Path:
    from training.data import DEMO_DATA

    return DEMO_DATA


def timed(fn: Any, *args: Any) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _set_state(engine: Any, done: int, *, seed: int) -> None:
    """Put the engine in a plausible state after `done` steps: moved LoRA weights, AdamW moments and step count,
    the accountant history `[(σ, q, done)]` the trainer's accountant would hold, and the step."""
    import torch

    engine.next_step = done
    if done == 0:  # checkpoint 0: the adapter right after LoRA init, a fresh optimizer
        return
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in engine.named_params:
            p.add_(torch.randn(p.shape, generator=gen) * 1e-3)
            engine.base_optimizer.state[p] = {"step": torch.tensor(float(done)),
                                              "exp_avg": torch.randn(p.shape, generator=gen) * 1e-4,
                                              "exp_avg_sq": torch.rand(p.shape, generator=gen) * 1e-8}
    plan = engine.plan
    engine.accountant.history = [(plan.noise_multiplier, plan.sample_rate, done)]


def bench_steps(runs: SyntheticRuns, run: Path, *, rounds: int) -> dict[str, Any]:
    """The every-step pass of `prov verify --data --secrets --base-model --replay 0` over synthetic run `run`, given
    what the verifier holds by then: the records, the run's statistics file, the data tokenized as it does."""
    from provenance._verify.data import check_steps, load_stats, read_examples
    from provenance.basemodel import load_tokenizer
    from provenance.batches import tokenize_records
    from provenance.hashing import hash_file
    from provenance.steplog import parse_records
    from training.runinfo import read_manifest

    manifest = read_manifest(run)
    log_file = run / "steps.jsonl"
    steps = parse_records(log_file.read_bytes())
    stats = load_stats(run / "stats.jsonl")
    t0 = time.perf_counter()
    examples = read_examples(demo_data(), manifest)
    tokenized = tokenize_records(examples, load_tokenizer(runs.model), kind=manifest["dataset"].get("kind", "text"),
                                 max_length=int(manifest["dataset"]["max_length"]))
    t_tokenize = time.perf_counter() - t0

    def once() -> None:
        result = check_steps(manifest=manifest, steps=steps, secrets=runs.secrets, tokenized=tokenized, stats=stats)
        assert result.full and result.loss_status == "checked", result.summary

    t_hash, t_check = interleaved(lambda: hash_file(log_file), once, rounds=rounds)
    size = log_file.stat().st_size
    examples_fed = sum(r.examples for r in steps)
    return row(f"every-step pass over {len(steps):,} steps (sampled indices, counts, lr, noise index, batch and "
               f"statistics commitments; demo data, tiny model's tokenizer) vs hashing the step log",
               t_check, t_hash, unit="s", target="report",
               note=f"({t_check:.2f} s in all, {t_check / len(steps) * 1e6:.0f} µs/step, {examples_fed:,} examples "
                    f"re-committed; tokenizing the data first {t_tokenize:.2f} s; step log {size / 1e6:.1f} MB; "
                    f"median of {rounds})")


def run(quick: bool = False) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp, prov_home(Path(tmp) / "home"):
        root = Path(tmp)
        runs = SyntheticRuns(root, steps=2_000 if quick else 10_000, checkpoints=2, accountants=())
        run, _, _ = runs.prepare("steps", accountant="rdp", owner=None)
        return [bench_steps(runs, run, rounds=1 if quick else 3)]


if __name__ == "__main__":
    show(run(quick="--quick" in sys.argv))
