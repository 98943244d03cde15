"""The boundary between the library and the trainer, enforced (issue #11).

- `provenance` never imports `training` (not even inside a function): the verifier reaches the trainer only through
  the replay protocol (`provenance.replay`, a subprocess found by entry point).
- No import cycle anywhere in `provenance`, counting imports inside functions; the only lazy edge allowed is the
  store's plain factory importing its backends (which never import it back).
- The CLI imports no private (`provenance._*`) module: everything it does, a library user can do.
- A verifier-only install (no torch, transformers, peft or opacus importable) imports the verifier and the CLI and
  runs the checks that need no training: the dataset root and the every-step pass.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.fixtures.imports import PACKAGE_ROOT, REPO, all_modules, cycle_through, import_graph, raw_imports

HEAVY = ("torch", "transformers", "peft", "opacus", "accelerate")


def test_provenance_never_imports_training() -> None:
    offenders = {}
    for name, path in all_modules().items():
        hits = sorted(m for m in raw_imports(path) if m == "training" or m.startswith("training."))
        if hits:
            offenders[name] = hits
    assert offenders == {}


def test_provenance_never_imports_torch_at_module_level() -> None:
    """Heavy libraries only inside functions: the verifier starts fast and installs light."""
    import ast

    offenders = {}
    for name, path in all_modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                top.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                top.add(node.module.split(".")[0])
        if top & set(HEAVY):
            offenders[name] = sorted(top & set(HEAVY))
    assert offenders == {}


@pytest.mark.parametrize("module", sorted(all_modules()))
def test_no_import_cycle_through(module: str) -> None:
    cycle = cycle_through(import_graph(), module)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cli_imports_no_private_module() -> None:
    offenders = {}
    for path in sorted((PACKAGE_ROOT / "cli").glob("*.py")):
        private = sorted(m for m in raw_imports(path)
                         if m.startswith("provenance.") and any(p.startswith("_") for p in m.split(".")[1:]))
        if private:
            offenders[path.name] = private
    assert offenders == {}


BLOCK_HEAVY = textwrap.dedent(f"""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {HEAVY!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: verifier-only install)")
            return None
    sys.meta_path.insert(0, Block())
""")


def run_without_torch(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK_HEAVY + textwrap.dedent(code)], cwd=REPO,
                          capture_output=True, text=True, check=False, timeout=120)


def test_the_verifier_and_cli_import_without_torch() -> None:
    out = run_without_torch("""
        import provenance.verify, provenance.cli, provenance.replay, provenance.determinism
        from provenance.cli import main
        assert main(["--version"]) == 0
        heavy = [m for m in sys.modules if m.split(".")[0] in {heavy!r}]
        assert not heavy, heavy
        print("ok")
    """.replace("{heavy!r}", repr(HEAVY)))
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_dataset_and_every_step_are_checked_without_torch(tmp_path: Path) -> None:
    """The dataset root and the every-step pass (indices, counts, lr, noise index, statistics) need no training."""
    out = run_without_torch("""
        import json
        from provenance import batches
        from provenance._verify.data import check_dataset, check_steps
        from provenance.dataset import dataset_root, load_examples
        from provenance.records import StepRecord, StepStats, stats_commitment
        from provenance.sampler import poisson_indices
        from provenance.schedule import lr_of_manifest
        from provenance.secrets import Secrets
        from provenance.hashing import Digest

        path = sys.argv[1] if len(sys.argv) > 1 else None
        secrets = Secrets(bytes(range(32)), bytes(range(32, 64)))
        texts = [f"example number {i}" for i in range(30)]
        class Run: dataset_root = dataset_root(texts, secrets.dataset_key)
        manifest = {"secrets": secrets.commitments(), "dataset": {"size": 30},
                    "training": {"dataset_size": 30, "steps": 5, "dp": {"sample_rate": "0.2"},
                                 "optimizer": {"lr": "0.001"},
                                 "schedule": {"name": "linear", "warmup_steps": 0, "min_lr_ratio": "0.0"}}}
        print(check_dataset(manifest=manifest, run=Run(), secrets=secrets, examples=texts))
        steps, stats = [], {}
        for k in range(5):
            idx = poisson_indices(secrets.noise_seed, k, 30, 0.2)
            stats[k] = StepStats(k, 2.0, 0.25)
            steps.append(StepRecord(step=k, batch=Digest.of(b"unchecked"), examples=len(idx),
                                    lr=lr_of_manifest(manifest["training"], k), noise_index=k,
                                    stats=stats[k].commitment(secrets.stats_key())))
        result = check_steps(manifest=manifest, steps=steps, secrets=secrets, tokenized=None, stats=stats)
        print(result.summary)
        assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "opacus")]
    """)
    assert out.returncode == 0, out.stderr
    assert "30 examples; the salted root matches" in out.stdout
    assert "all 5 steps: sampled indices, example counts, learning rates, noise indices" in out.stdout
