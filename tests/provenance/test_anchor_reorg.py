"""A chain reorganisation after training drops the last commitments and the finalisation (anvil's `anvil_reorg`
replaces the last blocks by empty ones, as a public chain's reorg does). The outbox notices by asking the registry
what it stores (not by remembered transaction hashes): `prov anchor status` says which jobs were dropped, `prov
anchor flush` (or a resumed trainer) re-sends them in order, and the honest adapter verifies again. Real anvil."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.adversary import Lab, last_adapter

pytestmark = [pytest.mark.chain, pytest.mark.slow]


def prov(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "provenance", *args], capture_output=True, text=True,
                          cwd=lab.home, timeout=600, env={**os.environ, "PROV_HOME": str(lab.home / ".prov")})


def status(lab: Lab, run: Path) -> dict[str, Any]:
    done = prov(lab, "anchor", "status", str(run), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def reorg(lab: Lab, depth: int) -> None:
    """Replace the last `depth` blocks by empty ones (their transactions are gone)."""
    web3 = lab.registry.web3
    before = int(web3.eth.block_number)
    answer = web3.provider.make_request("anvil_reorg", [depth, []])
    assert "error" not in answer, answer
    assert int(web3.eth.block_number) == before  # same height, other blocks


def labels(report: dict[str, Any]) -> list[tuple[str, str]]:
    names = {"register": "registration", "finalize": "finalization"}
    return [(names.get(j["kind"], f"checkpoint {j['index']}"), j["label"]) for j in report["jobs"]]


def test_reorg_dropping_the_last_commits_is_noticed_resent_and_verifies(lab: Lab) -> None:
    run = lab.train("reorg")
    before = status(lab, run)
    assert before["rechecked"] and before["status"] == "anchored 6/6"
    assert [label for _, label in labels(before)] == ["final"] * 6  # a development chain: final at the receipt

    reorg(lab, 3)  # the blocks of checkpoints 2 and 3 and of the finalisation
    after = status(lab, run)
    assert labels(after)[-3:] == [("checkpoint 2", "dropped"), ("checkpoint 3", "dropped"),
                                  ("finalization", "dropped")]
    assert [label for _, label in labels(after)[:3]] == ["final"] * 3
    assert "3 dropped by a chain reorganisation" in after["status"]
    assert all("dropped by a chain reorganisation" in j["error"] for j in after["jobs"][-3:])
    text = prov(lab, "anchor", "status", str(run)).stdout
    assert "dropped  checkpoint 3" in text and "final    checkpoint 1" in text and "anchored 3/6; 3 dropped" in text
    code, report = lab.verify(last_adapter(run))
    assert code != 0 and report["verdict"] != "verified"  # the commitment is gone from this chain

    flushed = prov(lab, "anchor", "flush", str(run), "--timeout", "120")
    assert flushed.returncode == 0, flushed.stderr
    again = status(lab, run)
    assert again["status"] == "anchored 6/6" and [label for _, label in labels(again)] == ["final"] * 6
    assert [j["drops"] for j in again["jobs"]] == [0, 0, 0, 1, 1, 1]
    history = lab.registry.run(bytes.fromhex(again["jobs"][0]["run_key"]))
    assert len(history.checkpoints) == 4 and history.finalization is not None  # nothing recorded was lost

    lab.mine(2)
    code, report = lab.verify(last_adapter(run))
    assert code == 0 and report["verdict"] == "verified", report["checks"]


def test_a_resumed_trainer_resends_what_a_reorg_dropped(lab: Lab) -> None:
    from provenance.anchor import Outbox
    from training.config import AnchorConfig
    from training.trainer import resume

    run = lab.train("reorg-resume")
    reorg(lab, 2)  # checkpoint 3 and the finalisation
    result = resume(run, quiet=True, anchor=AnchorConfig(enabled=True, flush_timeout=120.0))
    assert result.anchored
    with Outbox.open(run, reuse_target=True, wait_lock=30) as box:
        assert box.recheck() == []
        assert [(j.state, j.final) for j in box.jobs()] == [("done", True)] * 6
        assert [j.drops for j in box.jobs()][-2:] == [1, 1]
    lab.mine(2)
    code, report = lab.verify(last_adapter(run))
    assert code == 0 and report["verdict"] == "verified", report["checks"]
