"""What an ML engineer compares `prov train` against (issue #24): the loop they would otherwise write — stock Opacus
(`PrivacyEngine.make_private`, Poisson sampling, hooks) over a PEFT LoRA model — each as a whole fresh process on
the same tiny model, data, LoRA config, σ, C, expected batch, sequence length, optimizer and threads.

`prov train` runs with anchoring on the in-process chain (`[anchor] chain = "tester"`) and the local store, the
portable determinism profile, checkpoints, step log and finalisation; the stock loop trains and saves the adapter.
Interleaved (stock, prov, stock, ...), median of `rounds`; the ratio is prov / stock (issue target <= 1.05 at 90+
steps). Two rows: wall time, and CPU time (user + sys of the child process and its threads) — on a shared, loaded
machine wall time is mostly the wait for a core (both sides alike), CPU time is what each side really spent.
`--quick`: 24 steps, one round. `--small`: the issue's setting, the `small` model (~86M parameters, `prov init-model
--size small`) at 90 steps with 32-token sequences (as `bench_train --small`), one round unless `--rounds N`.
`--profile native` (with `--small`): prov with this CPU's own kernels, as the stock loop runs, instead of the portable
AVX2 profile that lets other machines replay bit for bit. `--prov-tree DIR`: time the `prov` of another source
tree (e.g. an older commit exported with `git archive`) against the same stock loop, for before/after rows.
"""

from __future__ import annotations

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

from bench.common import row, show

ROOT = Path(__file__).resolve().parents[1]
THREADS, BATCH, SEQ, SIGMA, CLIP, LR, RANK, ALPHA = 1, 16, 128, 1.0, 1.0, 1e-3, 8, 16
TARGETS = ("q_proj", "v_proj")

STOCK = r'''
import sys, json
import torch
torch.set_num_threads(int(sys.argv[4]))
from torch.utils.data import DataLoader, TensorDataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import LoraConfig, get_peft_model
from opacus import PrivacyEngine
import warnings
warnings.filterwarnings("ignore")

model_dir, data, out, _, steps, batch, seq, sigma, clip, lr, r, alpha = sys.argv[1:13]
steps, batch, seq, r, alpha = int(steps), int(batch), int(seq), int(r), int(alpha)
torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained(model_dir)
base = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager")
model = get_peft_model(base, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
texts = [json.loads(line)["text"] for line in open(data) if line.strip()]
enc = tok(texts, max_length=seq, padding="max_length", truncation=True, return_tensors="pt")
labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
loader = DataLoader(TensorDataset(enc["input_ids"], enc["attention_mask"], labels), batch_size=batch)
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=float(lr))
engine = PrivacyEngine(accountant="prv")
model, optimizer, loader = engine.make_private(module=model, optimizer=optimizer, data_loader=loader,
                                               noise_multiplier=float(sigma), max_grad_norm=float(clip),
                                               poisson_sampling=True, grad_sample_mode="hooks")
model.train()
done = 0
while done < steps:
    for ids, mask, lab in loader:
        if done == steps:
            break
        optimizer.zero_grad()
        if ids.shape[0]:
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            target = lab[:, 1:]
            tokens = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                       reduction="none", ignore_index=-100).view(target.shape)
            per_sample = tokens.sum(1) / (target != -100).sum(1).clamp(min=1)
            per_sample.mean().backward()
        optimizer.step()
        done += 1
print(json.dumps({"epsilon": engine.get_epsilon(delta=len(texts) ** -1.1)}))
model._module.save_pretrained(out)
'''


def _setup(root: Path, size: str) -> tuple[Path, Path]:
    from training.data import DEMO_DATA
    from training.tiny import build_model

    return build_model(root / "model", size=size), DEMO_DATA


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_stock(root: Path, *, steps: int, rounds: int, prov_tree: Path = ROOT, size: str = "tiny",
                seq: int = SEQ, profile: str = "portable") -> list[dict[str, Any]]:
    model, data = _setup(root, size)
    script = root / "stock.py"
    script.write_text(STOCK, encoding="utf-8")
    config = root / "prov.toml"
    config.write_text(f'[model]\npath = "{model}"\n[data]\npath = "{data}"\nmax_length = {seq}\n'
                      f'[lora]\nr = {RANK}\nalpha = {ALPHA}\ndropout = 0.0\ntarget_modules = ["q_proj", "v_proj"]\n'
                      f"[dp]\nnoise_multiplier = {SIGMA}\nmax_grad_norm = {CLIP}\naccountant = \"prv\"\n"
                      f'[optimizer]\nname = "adamw"\nlr = {LR}\n'
                      f"[training]\nsteps = {steps}\nbatch_size = {BATCH}\nthreads = {THREADS}\n"
                      f"checkpoint_every = {max(1, steps // 4)}\n[anchor]\nchain = \"tester\"\n"
                      f'[determinism]\nprofile = "{profile}"\n', encoding="utf-8")
    env = {**os.environ, "PROV_HOME": str(root / "home"), "OMP_NUM_THREADS": str(THREADS)}
    count = [0]

    def stock() -> tuple[float, float]:
        count[0] += 1
        t0, c0 = time.perf_counter(), _child_cpu()
        subprocess.run([sys.executable, str(script), str(model), str(data), str(root / f"stock-{count[0]}"),
                        str(THREADS), str(steps), str(BATCH), str(seq), str(SIGMA), str(CLIP), str(LR), str(RANK),
                        str(ALPHA)], env=env, check=True, capture_output=True, cwd=root)
        return time.perf_counter() - t0, _child_cpu() - c0

    def prov() -> tuple[float, float]:
        count[0] += 1
        t0, c0 = time.perf_counter(), _child_cpu()
        out = root / f"run-{count[0]}"
        done = subprocess.run([sys.executable, "-m", "provenance", "train", str(config), "--out", str(out), "--quiet"],
                              env={**env, "PYTHONPATH": str(prov_tree)}, capture_output=True, text=True, cwd=root)
        assert done.returncode == 0, done.stderr[-2000:]
        return time.perf_counter() - t0, _child_cpu() - c0

    stocks, provs = [], []
    for _ in range(rounds):
        stocks.append(stock())
        provs.append(prov())
    tree = "" if prov_tree == ROOT else f", prov from {prov_tree}"
    note = (f"({size} model, batch {BATCH} x {seq} tokens, LoRA r {RANK} q/v, σ {SIGMA}, C {CLIP}, AdamW, "
            f"{THREADS} thread; prov: anchoring on the in-process chain, {profile} profile, "
            f"{max(1, steps // 4)}-step checkpoints, finalisation; median of {rounds}{tree}; all runs ")
    name = f"`prov train` ({steps} steps, whole process) vs stock Opacus PrivacyEngine (Poisson) + PEFT LoRA loop"
    rows = []
    for i, what in ((0, "wall time"), (1, "CPU time, user + sys")):
        s, p = [x[i] for x in stocks], [x[i] for x in provs]
        rows.append(row(f"{name}, {what}", statistics.median(p), statistics.median(s), unit="s", target="<= 1.05",
                        note=note + f"stock={[round(x, 1) for x in s]} prov={[round(x, 1) for x in p]})"))
    return rows


def run(quick: bool = False, prov_tree: Path = ROOT) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        return bench_stock(Path(tmp), steps=24 if quick else 96, rounds=1 if quick else 3, prov_tree=prov_tree)


def run_small(rounds: int = 1, prov_tree: Path = ROOT, profile: str = "portable") -> list[dict[str, Any]]:
    """The issue's target setting: the small model at 90 steps (32-token sequences, as bench_train --small)."""
    with tempfile.TemporaryDirectory() as tmp:
        return bench_stock(Path(tmp), steps=90, rounds=rounds, prov_tree=prov_tree, size="small", seq=32,
                           profile=profile)


def _arg(flag: str) -> str | None:
    return sys.argv[sys.argv.index(flag) + 1] if flag in sys.argv else None


if __name__ == "__main__":
    tree = Path(_arg("--prov-tree") or ROOT).resolve()
    if "--small" in sys.argv:
        show(run_small(rounds=int(_arg("--rounds") or 1), prov_tree=tree, profile=_arg("--profile") or "portable"))
    else:
        show(run(quick="--quick" in sys.argv, prov_tree=tree))
