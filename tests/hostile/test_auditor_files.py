"""Files handed to the auditor with the run (#22): a wrong `secrets.json` is one line or a report (never an internal
error of the text report), and a `stats.jsonl` that is huge or holds steps beyond the run's log is refused at once,
naming the file, before it is read."""

from __future__ import annotations

import json
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="needs a trained run: install the train extra (scripts/setup does)")

from provenance.errors import ProvenanceError, UsageError
from provenance.report import render_html, render_text
from tests.fixtures.verify import VerifyEnv, data_options, last, status

pytestmark = pytest.mark.slow


@pytest.fixture
def anchored(tmp_path: Path, tiny_run: Any, tiny_model_dir: Path) -> tuple[VerifyEnv, Path, dict[str, Any]]:
    env = VerifyEnv(tmp_path)
    run = env.copy(tiny_run.run_dir)
    env.anchor(run)
    return env, run, {**data_options(run, tiny_model_dir), "replay": "0"}


def test_wrong_secrets_are_one_line_or_a_report(anchored: tuple[VerifyEnv, Path, dict[str, Any]],
                                                tmp_path: Path) -> None:
    env, run, opts = anchored
    adapter = last(run) / "adapter_model.safetensors"
    good = json.loads((run / "secrets.json").read_text())
    malformed = {"list": [1], "int": {**good, "noise_seed": 5}, "short": {**good, "noise_seed": "ab"},
                 "nested": {**good, "dataset_key": {"a": [1]}}, "no-format": {"noise_seed": good["noise_seed"]}}
    for name, doc in malformed.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        with pytest.raises(ProvenanceError) as info:  # the auditor's input: one line naming the file
            env.verify(adapter, **{**opts, "secrets": path})
        assert str(path) in str(info.value) and "\n" not in str(info.value), name
    # Another run's secrets (valid, wrong keys): a report whose checks say which commitment they do not open.
    for name, doc in {"seed": {**good, "noise_seed": "11" * 32}, "key": {**good, "dataset_key": "22" * 32}}.items():
        path = tmp_path / f"other-{name}.json"
        path.write_text(json.dumps(doc))
        report = env.verify(adapter, **{**opts, "secrets": path, "stats": run / "stats.jsonl"})
        assert report["verdict"] == "failed", report["verdict"]
        assert "failed" in (status(report)["dataset"], status(report)["steps"])
        text = render_text(report)  # was: internal error: TypeError (max(7) of an empty replay)
        assert "does not open the run's commitment" in text and "Replay" in text
        assert "<html" in render_html(report).lower()


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_huge_and_overlong_statistics_are_refused_before_reading(anchored: tuple[VerifyEnv, Path, dict[str, Any]],
                                                                 tmp_path: Path) -> None:
    env, run, opts = anchored
    adapter = last(run) / "adapter_model.safetensors"
    honest = env.verify(adapter, **opts, stats=run / "stats.jsonl")
    assert honest["verdict"] == "verified" and status(honest)["steps"] == "passed"

    huge = tmp_path / "huge-stats.jsonl"
    with huge.open("wb") as out:  # 300 MiB, sparse: the size alone must refuse it
        out.write((run / "stats.jsonl").read_bytes())
        out.truncate(300 << 20)
    before, started = _peak_rss(), time.monotonic()
    with pytest.raises(UsageError) as info:
        env.verify(adapter, **opts, stats=huge)
    assert time.monotonic() - started < 30 and _peak_rss() - before < 64 << 20
    assert str(huge) in str(info.value) and "bytes is more than" in str(info.value)

    lines = (run / "stats.jsonl").read_bytes().splitlines()
    beyond = json.loads(lines[-1])
    extra = tmp_path / "beyond-stats.jsonl"
    extra.write_bytes(b"\n".join([*lines, json.dumps({**beyond, "step": beyond["step"] + 1}).encode()]) + b"\n")
    with pytest.raises(UsageError) as info:  # the run is finalised: no step may follow its log
        env.verify(adapter, **opts, stats=extra)
    assert f"{extra} line {len(lines) + 1}" in str(info.value) and "step log has" in str(info.value)


@pytest.mark.chain
def test_the_cli_on_anvil_reports_other_secrets_and_refuses_huge_statistics(anvil_node: Any, tmp_path: Path,
                                                                            tiny_run: Any,
                                                                            tiny_model_dir: Path) -> None:
    """As an auditor runs it: `prov verify` in a child against anvil. Another run's secrets give the text report
    (exit 1, no internal error); a 300 MiB stats.jsonl is one line (exit 2) in seconds, within the RSS bound."""
    from provenance.chain import connect
    from provenance.store import open_store
    from tests.fixtures.attest import anchor_run
    from tests.fixtures.chain import _anvil_dev_keys
    from tests.hostile.child import assert_bounded, run_prov

    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    registry = connect(anvil_node.rpc_url, key=_anvil_dev_keys()[0], use_config=False)
    registry.deploy()
    store = tmp_path / "store"
    anchor_run(run, registry=registry, store=open_store(f"local:{store}"))
    opts = data_options(run, tiny_model_dir)
    base = ["verify", str(last(run) / "adapter_model.safetensors"), "--rpc", anvil_node.rpc_url, "--registry",
            str(registry.address), "--store", f"local:{store}", "--replay", "0", "--base-model",
            str(tiny_model_dir), "--data", str(opts["data"])]
    other = tmp_path / "other-secrets.json"
    other.write_text(json.dumps({**json.loads((run / "secrets.json").read_text()), "noise_seed": "11" * 32}))
    shown = run_prov(*base, "--secrets", str(other), "--stats", str(run / "stats.jsonl"), cwd=tmp_path)
    assert shown.code == 1, (shown.stdout[-1000:], shown.stderr[-1000:])
    assert "internal error" not in shown.stderr and "Traceback" not in shown.stderr
    assert "does not open the run's commitment" in shown.stdout and "FAILED" in shown.stdout

    huge = tmp_path / "stats.jsonl"
    with huge.open("wb") as out:
        out.write((run / "stats.jsonl").read_bytes())
        out.truncate(300 << 20)
    line = assert_bounded(run_prov(*base, "--secrets", str(run / "secrets.json"), "--stats", str(huge),
                                   cwd=tmp_path))
    assert str(huge) in line and "bytes is more than" in line
