"""The CLI and the torch-free parts of `training` start without importing torch (a verifier must start fast)."""

from __future__ import annotations

import subprocess
import sys


def test_cli_and_light_modules_do_not_import_torch() -> None:
    code = (
        "import sys, provenance.cli, provenance.verify, provenance.dataset, provenance.secrets, provenance.sampler, "
        "provenance.basemodel, training, training.config, training.data, training.runinfo, training.launch, "
        "training.rundir, training.statslog, training.determinism, training.anchoring; "
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'opacus') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
