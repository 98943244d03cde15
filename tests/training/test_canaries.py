"""`prov train --canaries M` and `prov audit-dp` (issue #23's optional one-run empirical DP audit): M = 0 changes
nothing; a canary run trains on the user's data followed by its member canaries (RUN/data.jsonl), publishes only the
canaries' commitment, resumes and replays like any run, and its audit bounds ε from below beside the proven ε."""

from __future__ import annotations

import json
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provenance.canaries import CANARIES_NAME, DATA_NAME, load
from provenance.cli import main
from provenance.dataset import load_records
from provenance.manifest import hash_directory
from tests.fixtures.training import assert_rebuilds, prov_home, replay_run
from training.data import DEMO_DATA
from training.runinfo import read_manifest


@pytest.fixture(scope="module")
def canary_run(tmp_path_factory: pytest.TempPathFactory, tiny_config: Callable[..., Any], fixed_secrets: Any) -> Path:
    """A finished 6-step DP run of the demo data with 16 canaries; tests copy it before changing anything."""
    from training.trainer import train

    out = tmp_path_factory.mktemp("canary-run") / "run"
    with prov_home(out.parent / "prov-home"):
        train(tiny_config(out, **{"audit.canaries": 16}), secrets=fixed_secrets, quiet=True)
    return out


@pytest.mark.slow
def test_zero_canaries_change_nothing(tiny_run: Any, tiny_config: Callable[..., Any], fixed_secrets: Any,
                                      isolated_state: Path, tmp_path: Path) -> None:
    from training.rundir import prepare_run

    run = prepare_run(tiny_config(tmp_path / "run", **{"audit.canaries": 0}), secrets=fixed_secrets)
    assert (run / "run.json").read_bytes() == (tiny_run.run_dir / "run.json").read_bytes()
    assert "canaries" not in read_manifest(run) and read_manifest(run)["run_id"] == tiny_run.run_id
    assert not (run / CANARIES_NAME).exists() and not (run / DATA_NAME).exists()
    assert json.loads((run / "local.json").read_bytes())["data"] == str(DEMO_DATA.resolve())


@pytest.mark.slow
def test_a_canary_run_trains_on_the_data_then_its_members(canary_run: Path, fixed_secrets: Any) -> None:
    canaries = load(canary_run / CANARIES_NAME)
    manifest = read_manifest(canary_run)
    assert manifest["canaries"] == canaries.manifest_section() and canaries.count == 16
    assert stat.S_IMODE((canary_run / CANARIES_NAME).stat().st_mode) == 0o600
    assert json.loads((canary_run / "local.json").read_bytes())["data"] == str((canary_run / DATA_NAME).resolve())
    assert manifest["config"]["data"]["format"] == "jsonl" and manifest["dataset"]["name"] == DATA_NAME
    data = load_records(canary_run / DATA_NAME)
    user = load_records(DEMO_DATA)
    assert list(data) == [*user, *canaries.members()]
    assert manifest["dataset"]["size"] == manifest["training"]["dataset_size"] == len(user) + len(canaries.members())


@pytest.mark.slow
def test_audit_reports_a_bound_below_the_proven_epsilon(canary_run: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit-dp", str(canary_run)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("empirical ε >= ") and line.endswith(": consistent") and "16 canaries, 8 guesses" in line
    assert main(["audit-dp", str(canary_run), "--json", "--guesses", "2", "--confidence", "0.9"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "prov.dp-audit.v1" and doc["verdict"] == "consistent"
    assert doc["guesses"] == 4 and doc["canaries"] == 16 and doc["confidence"] == 0.9
    assert 0.0 <= doc["epsilon_lower_bound"] <= doc["epsilon_proven"] and doc["delta"] > 0
    text = json.dumps(doc)
    assert all(c.record["text"][:20] not in text for c in load(canary_run / CANARIES_NAME).canaries)


@pytest.mark.slow
def test_a_tampered_or_missing_canaries_file_is_refused(canary_run: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from provenance.canaries import draw

    run = tmp_path / "run"
    shutil.copytree(canary_run, run)
    doc = json.loads((run / CANARIES_NAME).read_bytes())
    doc["canaries"][3]["member"] = not doc["canaries"][3]["member"]
    (run / CANARIES_NAME).write_text(json.dumps(doc))
    draw(16, kind="text", max_length=32).save(run / "other.json")  # consistent with its own seed, not committed
    for change, expected in [(None, "not those their seed derives"),
                             ("other", "does not match the run manifest's commitment"),
                             ("delete", "no canaries file")]:
        if change == "other":
            (run / "other.json").replace(run / CANARIES_NAME)
        elif change == "delete":
            (run / CANARIES_NAME).unlink()
        assert main(["audit-dp", str(run)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("prov: error: ") and expected in err and err.count("\n") == 1, err
        assert "Traceback" not in err


@pytest.mark.slow
def test_bad_options_are_one_line_errors(tiny_run: Any, canary_run: Path, tiny_model_dir: Path, isolated_state: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["train", "--model", str(tiny_model_dir), "--no-anchor", "--quiet", "--canaries", "-1"], "--canaries"),
        (["train", "--resume", str(canary_run), "--canaries", "3"], "--canaries"),
        (["audit-dp", str(tiny_run.run_dir)], "trained without canaries"),
        (["audit-dp", str(canary_run), "--guesses", "9"], "--guesses"),
        (["audit-dp", str(canary_run), "--confidence", "1.5"], "--confidence"),
    ]
    for args, expected in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("prov: error: ") and expected in err and err.count("\n") == 1, err


@pytest.mark.slow
@pytest.mark.replay
def test_nothing_published_holds_a_canary(canary_run: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from provenance.report import publishable
    from tests.fixtures.verify import VerifyEnv, data_options, last
    from tests.provenance.test_published import forbidden, published_bytes

    env = VerifyEnv(tmp_path)
    run = env.copy(canary_run)
    env.anchor(run)
    report = env.verify(last(run) / "adapter_model.safetensors", replay="0", **data_options(run, tiny_model_dir))
    assert report["verdict"] == "verified"
    haystack = published_bytes(env) + b"\n" + json.dumps(publishable(report)).encode()
    canaries = load(run / CANARIES_NAME)
    needles = [canaries.seed, canaries.seed.hex().encode(), b'"member"']
    for canary in canaries.canaries:
        text = canary.record["text"]
        needles += [text.encode(), text[:24].encode(), text[-24:].encode()]
    assert [n[:30] for n in needles if n in haystack] == []
    private = (run / CANARIES_NAME).read_bytes()
    assert all(n in private for n in needles[1:])  # the search finds them where they do live (the seed as hex)
    members = b"".join(c.record["text"].encode() for c in canaries.canaries if c.member)
    assert members and all(c.record["text"].encode() in (run / DATA_NAME).read_bytes()
                           for c in canaries.canaries if c.member)
    # and the scan every run passes (statistics, data, secrets) passes for this one too
    found = {kind: [n[:40] for n in items if n in haystack] for kind, items in forbidden(run, tiny_model_dir).items()}
    assert all(not hits for hits in found.values()), found
    # handed the trainer's own records instead of the run's data.jsonl, the auditor is told which file to give
    wrong = env.verify(last(run) / "adapter_model.safetensors", replay="0",
                       **{**data_options(run, tiny_model_dir), "data": DEMO_DATA})
    assert wrong["verdict"] == "failed"
    detail = json.dumps([c for c in wrong["checks"] if c["id"] == "dataset"])
    assert "trained with canaries: give its data.jsonl" in detail, detail


@pytest.mark.slow
@pytest.mark.replay
def test_a_canary_run_resumes_and_replays(canary_run: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from training.trainer import resume

    run = tmp_path / "run"
    shutil.copytree(canary_run, run)
    local = json.loads((run / "local.json").read_bytes())  # the copy's data: its own RUN/data.jsonl
    local["data"] = str((run / DATA_NAME).resolve())
    (run / "local.json").write_text(json.dumps(local, sort_keys=True, separators=(",", ":")))
    shutil.rmtree(run / "checkpoints" / "000003")
    resumed = resume(run, quiet=True)
    assert hash_directory(run / "checkpoints" / "000003").digest() == \
        hash_directory(canary_run / "checkpoints" / "000003").digest()
    assert resumed.run_id == read_manifest(canary_run)["run_id"]
    _, result = replay_run(run, base_model=tiny_model_dir, data=run / DATA_NAME, work=tmp_path)
    assert_rebuilds(run, result, [0, 1, 2, 3])


@pytest.mark.slow
def test_a_non_private_run_that_memorises_shows_a_positive_bound(tiny_config: Callable[..., Any], tmp_path: Path,
                                                                 isolated_state: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Eight user records and 64 canaries, 100 non-private steps at a high learning rate: the members' loss falls far
    more than the others' (measured: 32 of 32 guesses right in every try, bound 2.32 at 95%)."""
    from training.trainer import train

    data = tmp_path / "small.jsonl"
    data.write_text("".join(DEMO_DATA.read_text().splitlines(keepends=True)[:8]))
    cfg = tiny_config(tmp_path / "run", **{"audit.canaries": 64, "data.path": str(data), "dp.enabled": False,
                                           "training.steps": 100, "training.checkpoint_every": 100,
                                           "training.batch_size": 16, "optimizer.lr": 0.05, "lora.r": 16,
                                           "lora.dropout": 0.0})
    train(cfg, quiet=True)
    assert main(["audit-dp", str(tmp_path / "run"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "no-claim" and doc["epsilon_proven"] is None and doc["delta"] == 0.0
    assert doc["guesses"] == 32 and doc["correct"] >= 28 and doc["epsilon_lower_bound"] > 1.0
    assert main(["audit-dp", str(tmp_path / "run")]) == 0
    assert "non-private run: no proven ε" in capsys.readouterr().out


def test_a_bound_above_the_proven_epsilon_is_inconsistent_and_exits_1(monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from training import audit

    result = audit.AuditResult("ab" * 32, 3, 6, 64, 32, 32, 0.95, 1e-5, 2.31, 0.61, {"mean": 0.1})
    monkeypatch.setattr(audit, "audit_run", lambda *args, **kwargs: result)
    assert main(["audit-dp", "anywhere"]) == 1
    line = capsys.readouterr().out
    assert line.startswith("INCONSISTENT: empirical ε >= 2.31 (95% confidence; 64 canaries, 32 guesses, 32 correct)")
    assert "exceeds the proven ε <= 0.61 (δ = 1e-5)" in line and line.count("\n") == 1
    assert main(["audit-dp", "anywhere", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "inconsistent"
