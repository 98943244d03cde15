"""The replay worker (`prov.replay-request.v1` → `prov.replay-result.v1`): every checkpoint of a run, checkpoint 0
included, is rebuilt as a whole directory whose checkpoint digest equals the committed one; tampered or crafted
start states fail their segment; bad requests exit 2 with one line; the worker runs in a fresh process found
through the `prov.replay` entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from provenance.manifest import MANIFEST_NAME, hash_directory
from provenance.records import StepRecordV3, StepStats
from provenance.sampler import poisson_indices
from provenance.steplog import StepLog
from training.checkpoint import read_checkpoint
from training.data import DEMO_DATA
from training.replay import main, replay, request_for_run, result_digests
from training.statslog import read_stats


def _committed(run_dir: Path, index: int) -> str:
    return str(hash_directory(run_dir / "checkpoints" / f"{index:06d}").digest())


def _rehash(path: Path) -> None:
    """Rewrite a checkpoint directory's own manifest after changing a file (what a dishonest trainer would do)."""
    (path / MANIFEST_NAME).write_bytes(hash_directory(path).encode())


def test_every_checkpoint_is_rebuilt_whole_and_bit_for_bit(tiny_run: Any, tiny_model_dir: Path, fixed_secrets: Any,
                                                           tmp_path: Path) -> None:
    run_dir: Path = tiny_run.run_dir
    request = request_for_run(run_dir, base_model=tiny_model_dir, data=DEMO_DATA, out=tmp_path / "out")
    assert [s.index for s in request.segments] == [0, 1, 2, 3] and request.segments[0].start is None
    result = replay(request)
    assert result["format"] == "prov.replay-result.v1"
    env = result["environment"]
    assert env["threads"] == 1 and env["device"] == "cpu" and env["gpu"] is None and env["versions"]["torch"]
    log = StepLog.open(run_dir, create=False)
    stats = read_stats(run_dir / "stats.jsonl")
    for seg in result["segments"]:
        j = seg["index"]
        assert seg["checkpoint_digest"] == _committed(run_dir, j), j
        assert seg["weights_digest"] == str(read_checkpoint(run_dir / "checkpoints" / f"{j:06d}").weights)
        steps = range(2 * j - 2, 2 * j) if j else range(0)
        assert [StepRecordV3.from_json(r) for r in seg["records"]] == [log.record(k) for k in steps]
        assert [StepStats.from_json(s) for s in seg["stats"]] == [stats[k] for k in steps]
        assert seg["indices"] == [poisson_indices(fixed_secrets.noise_seed, k, 256, 8 / 256) for k in steps]
        rebuilt = tmp_path / "out" / f"{j:06d}"
        for name in ("adapter_model.safetensors", "optimizer.safetensors", "state.json", "steps.jsonl"):
            assert (rebuilt / name).read_bytes() == (run_dir / "checkpoints" / f"{j:06d}" / name).read_bytes()


def test_segments_replay_in_any_order_and_zero_step_segments_too(tiny_run: Any, tiny_model_dir: Path,
                                                                 tmp_path: Path) -> None:
    run_dir: Path = tiny_run.run_dir
    ordered = request_for_run(run_dir, base_model=tiny_model_dir, data=DEMO_DATA, out=tmp_path / "a",
                              indices=[2, 0, 1])
    two = ordered.segments[0]
    zero_step = replace(two, index=3, steps=(4, 4), log_size=4, log_hashes=ordered.segments[0].log_hashes,
                        start=run_dir / "checkpoints" / "000002", out=tmp_path / "a" / "zero")
    # the log state of a segment starting at step 4 is the compact range of the first 4 leaves
    zero_step = replace(zero_step, log_hashes=request_for_run(run_dir, base_model=tiny_model_dir, data=DEMO_DATA,
                                                              out=tmp_path / "x", indices=[3]).segments[0].log_hashes)
    result = replay(replace(ordered, segments=(*ordered.segments, zero_step)))
    digests = result_digests(result)
    assert digests[0] == hash_directory(run_dir / "checkpoints" / "000000").digest()
    assert str(digests[1]) == _committed(run_dir, 1) and str(digests[2]) == _committed(run_dir, 2)
    zero = next(s for s in result["segments"] if s["index"] == 3)
    assert zero["records"] == [] and zero["checkpoint_digest"] != _committed(run_dir, 3)
    same = read_checkpoint(tmp_path / "a" / "zero")
    before = read_checkpoint(run_dir / "checkpoints" / "000002")
    assert all(same.adapter[k].equal(before.adapter[k]) for k in before.adapter)  # no step: the same tensors
    assert same.state["checkpoint"] == 3 and same.state["log_size"] == 4


def test_a_tampered_start_state_does_not_reproduce_the_next_checkpoint(tiny_run: Any, tiny_model_dir: Path,
                                                                       tmp_path: Path) -> None:
    """An optimizer state crafted into checkpoint 1 replays to a different checkpoint 2 (whole-state comparison),
    and a start whose tensors have the wrong shape fails its segment with one line while others still run."""
    from safetensors.torch import load_file, save_file

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run_dir)
    one = run_dir / "checkpoints" / "000001"
    optimizer = load_file(one / "optimizer.safetensors")
    key = next(k for k in optimizer if k.endswith("exp_avg_sq"))
    optimizer[key] = optimizer[key] * 4
    save_file(optimizer, one / "optimizer.safetensors")
    _rehash(one)
    three = run_dir / "checkpoints" / "000002"
    adapter = load_file(three / "adapter_model.safetensors")
    name = next(iter(adapter))
    adapter[name] = adapter[name][:1]
    save_file(adapter, three / "adapter_model.safetensors", metadata={"format": "pt"})
    _rehash(three)
    result = replay(request_for_run(run_dir, base_model=tiny_model_dir, data=DEMO_DATA, out=tmp_path / "out",
                                    indices=[2, 3, 1]))
    by_index = {s["index"]: s for s in result["segments"]}
    assert by_index[2]["checkpoint_digest"] != _committed(tiny_run.run_dir, 2)
    assert by_index[1]["checkpoint_digest"] == _committed(tiny_run.run_dir, 1)
    assert "error" in by_index[3] and "\n" not in by_index[3]["error"]


def test_a_log_state_that_does_not_match_the_start_fails_its_segment(tiny_run: Any, tiny_model_dir: Path,
                                                                     tmp_path: Path) -> None:
    request = request_for_run(tiny_run.run_dir, base_model=tiny_model_dir, data=DEMO_DATA, out=tmp_path / "out",
                              indices=[2])
    wrong = replace(request.segments[0], log_hashes=tuple(bytes(32) for _ in request.segments[0].log_hashes))
    result = replay(replace(request, segments=(wrong,)))
    assert "start checkpoint's root" in result["segments"][0]["error"]


def _request_file(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "req.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


@pytest.mark.parametrize(("change", "message"), [
    ("not json", "not a JSON document"),
    ("format", "not a prov.replay-request.v1 document"),
    ("secrets", "do not match the run manifest"),
    ("data", "not the run's data"),
    ("steps", "steps must be [a, b]"),
])
def test_bad_requests_exit_2_with_one_line(change: str, message: str, tiny_run: Any, tiny_model_dir: Path,
                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from provenance.secrets import Secrets

    doc: Any = request_for_run(tiny_run.run_dir, base_model=tiny_model_dir, data=DEMO_DATA, out=tmp_path / "out",
                               indices=[1]).to_json()
    if change == "not json":
        doc = "{not json"
    elif change == "format":
        doc["format"] = "prov.replay-request.v0"
    elif change == "secrets":
        Secrets.generate().save(tmp_path / "other.json")
        doc["secrets"] = str(tmp_path / "other.json")
    elif change == "data":
        other = tmp_path / "other.jsonl"
        other.write_text(DEMO_DATA.read_text().replace("a", "b", 1))
        doc["data"] = str(other)
    else:
        doc["segments"][0]["steps"] = [3, 1]
    assert main(["--request", str(_request_file(tmp_path, doc)), "--result", str(tmp_path / "res.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("replay: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "res.json").exists()


def test_bfloat16_trains_and_replays_bit_for_bit(tiny_config: Any, fixed_secrets: Any, tiny_model_dir: Path,
                                                 tmp_path: Path, isolated_state: Path) -> None:
    import torch

    from training.trainer import train

    result = train(tiny_config(tmp_path / "run", **{"model.dtype": "bfloat16", "training.steps": 3,
                                                    "training.physical_batch_size": 3}),
                   secrets=fixed_secrets, quiet=True)
    last = read_checkpoint(result.run_dir / "checkpoints" / "000002")
    assert all(t.dtype == torch.float32 for t in [*last.adapter.values(), *last.optimizer.values()])
    replayed = replay(request_for_run(result.run_dir, base_model=tiny_model_dir, data=DEMO_DATA,
                                      out=tmp_path / "out"))
    assert replayed["environment"]["dtype"] == "bfloat16"
    for seg in replayed["segments"]:
        assert seg["checkpoint_digest"] == _committed(result.run_dir, seg["index"])


@pytest.mark.slow
@pytest.mark.replay
def test_the_worker_runs_in_a_fresh_process_found_by_its_entry_point(tiny_run: Any, tiny_model_dir: Path,
                                                                      tmp_path: Path) -> None:
    from importlib.metadata import entry_points

    from training.determinism import environment_for
    from training.runinfo import read_manifest

    (point,) = [p for p in entry_points(group="prov.replay") if p.name == "torch"]
    request = request_for_run(tiny_run.run_dir, base_model=tiny_model_dir, data=DEMO_DATA, out=tmp_path / "out")
    path = _request_file(tmp_path, request.to_json())
    env = {**os.environ, **environment_for(read_manifest(tiny_run.run_dir))}
    out = subprocess.run([sys.executable, "-m", point.value, "--request", str(path), "--result",
                          str(tmp_path / "res.json")], env=env, capture_output=True, text=True, timeout=600,
                         check=False)
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "res.json").read_text())
    assert {s["index"]: s["checkpoint_digest"] for s in result["segments"]} == {
        j: _committed(tiny_run.run_dir, j) for j in range(4)}


def test_checkpoint_0_and_zero_step_segments_need_no_data_or_secrets(tiny_run: Any, tiny_model_dir: Path,
                                                                      tmp_path: Path) -> None:
    """The verifier rebuilds checkpoint 0 with only the base model (no --data/--secrets): nothing in a checkpoint
    that no step produced derives from them. A segment that runs steps still needs both."""
    request = request_for_run(tiny_run.run_dir, base_model=tiny_model_dir, data=DEMO_DATA, out=tmp_path / "out",
                              indices=[0])
    bare = replace(request, data=None, secrets=None)
    result = replay(bare)
    assert result["segments"][0]["checkpoint_digest"] == _committed(tiny_run.run_dir, 0)
    with_steps = request_for_run(tiny_run.run_dir, base_model=tiny_model_dir, data=DEMO_DATA,
                                 out=tmp_path / "out2", indices=[1])
    path = _request_file(tmp_path, replace(with_steps, data=None, secrets=None).to_json())
    assert main(["--request", str(path), "--result", str(tmp_path / "res.json")]) == 2


@pytest.mark.parametrize(("world", "threads", "cores", "expected"),
                         [(1, 1, 16, 1), (2, 1, 2, 2), (2, 1, 1, 1), (4, 2, 4, 2), (2, 4, 2, 1), (8, 1, 16, 8)])
def test_shards_run_on_as_many_threads_as_the_cores_hold(world: int, threads: int, cores: int, expected: int,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker computes at most W shards at once, each at the recorded intra-op thread count."""
    from training import replay

    monkeypatch.setattr(replay.os, "sched_getaffinity", lambda _pid: set(range(cores)), raising=False)
    assert replay.shard_threads(world, threads) == expected


@pytest.mark.parametrize(("error", "resource"), [
    (MemoryError(), True), (OSError(28, "No space left on device"), True), (OSError(13, "Permission denied"), False),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 2 bytes. Error code 12 (Cannot allocate memory)"), True),  # torch's CPU allocator
    (RuntimeError("shape mismatch"), False),
])
def test_running_out_of_memory_or_disk_leaves_a_segment_undecided(
        error: Exception, resource: bool, tiny_run: Any, tiny_model_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine's limits are not the run's fault: such a segment is marked `resource` (the verifier's replay is
    then inconclusive, never failed or passed); any other error fails the segment."""
    from provenance.replay import parse_result
    from training import replay as worker

    def broken(self: Any, seg: Any) -> dict[str, Any]:
        raise error

    monkeypatch.setattr(worker.Replayer, "segment", broken)
    request = request_for_run(tiny_run.run_dir, base_model=tiny_model_dir, data=DEMO_DATA, out=tmp_path / "out")
    result = replay(request)
    assert all(bool(s.get("resource")) is resource for s in result["segments"])
    outcome = parse_result(json.dumps(result).encode()).outcome(1)
    assert outcome.error and outcome.resource is resource
    if resource:
        assert "this machine ran out of" in outcome.error
