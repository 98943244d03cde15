"""An anchored run's manifest always names its owner: the signer is resolved before step 0 (`run_owner`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provenance.errors import UsageError
from training.config import AnchorConfig
from training.rundir import run_owner


def test_the_in_process_chain_names_the_account_that_will_register(isolated_state: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from provenance.chain import connect

    monkeypatch.delenv("PROV_PRIVATE_KEY", raising=False)
    assert run_owner(AnchorConfig(enabled=False)) is None
    assert run_owner(AnchorConfig(chain="tester")) == connect("tester", use_config=False).signer.address


def test_an_unknown_signer_is_refused_before_step_zero(isolated_state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROV_PRIVATE_KEY", raising=False)
    with pytest.raises(UsageError, match="names no owner can be registered first by anyone"):
        run_owner(AnchorConfig(chain="http://127.0.0.1:9"))  # nothing listens: the signer cannot be told


@pytest.mark.chain
def test_a_local_dev_node_not_in_the_project_config_signs_with_dev_account_0(
        isolated_state: Path, monkeypatch: pytest.MonkeyPatch, anvil_node: object) -> None:
    from provenance._chain.keys import dev_signer

    monkeypatch.delenv("PROV_PRIVATE_KEY", raising=False)
    assert run_owner(AnchorConfig(chain=anvil_node.rpc_url)) == dev_signer(0).address  # type: ignore[attr-defined]


def test_anchoring_a_run_started_without_an_owner_warns(tiny_run: Any, tmp_path: Path, isolated_state: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import shutil

    from training.trainer import OWNERLESS_WARNING, resume

    monkeypatch.delenv("PROV_PRIVATE_KEY", raising=False)
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    (run / "train.lock").unlink(missing_ok=True)
    out = io.StringIO()
    resume(run, anchor=AnchorConfig(chain="tester", finalize=False, flush_timeout=60.0), stream=out)
    assert OWNERLESS_WARNING in out.getvalue()
