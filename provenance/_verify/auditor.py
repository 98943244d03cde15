"""The stages that use what only an auditor is given — the base model, the data, the run's secrets and private
statistics: the dataset root, the cheap pass over every step, checkpoint 0 rebuilt, and replay of segments."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance import determinism, merkle
from provenance import replay as protocol
from provenance._verify import data as datachecks
from provenance._verify import replay as rp
from provenance._verify.checks import CheckFailed, CheckInconclusive
from provenance._verify.pipeline import Evidence
from provenance.errors import ProvenanceError
from provenance.ports import RegistryReader, StoreReader
from provenance.records import STEP_FORMAT
from provenance.secrets import Secrets


@dataclass(frozen=True)
class AuditorInputs:
    base_model: Path | None
    data: Path | None
    secrets: Path | None
    stats: Path | None
    replay: str  # "0", a count, or "all"
    beacon: str | None
    confirmations: int


def stage_data(ev: Evidence, inputs: AuditorInputs) -> tuple[Secrets, list[Any]] | None:
    """Dataset root and every step's cheap fields. Returns the secrets and examples for replay, when usable."""
    checks = ev.checks
    if inputs.data is None or inputs.secrets is None:
        why = "needs --data and --secrets (the dataset and the run's secrets, given only to auditors)"
        checks.not_run("dataset", why)
        checks.not_run("steps", why)
        return None
    if ev.manifest is None or ev.run is None:
        checks.not_run("dataset", checks.why_missing("run_manifest", "the run manifest"))
        checks.not_run("steps", checks.why_missing("run_manifest", "the run manifest"))
        return None
    secrets = Secrets.load(inputs.secrets)
    examples: list[Any] = []
    with checks.run("dataset"):
        examples = datachecks.read_examples(inputs.data, ev.manifest)
        checks.passed("dataset", datachecks.check_dataset(manifest=ev.manifest, run=ev.run, secrets=secrets,
                                                          examples=examples))
    if not checks.ok("dataset"):
        checks.not_run("steps", checks.why_missing("dataset", "the committed dataset"))
        return None
    if ev.steps is None:
        checks.not_run("steps", checks.why_missing("step_log", "the rebuilt step log"))
        return secrets, examples
    with checks.run("steps"):
        if str(secrets.commitments()["noise_seed_commitment"]) != ev.manifest["secrets"]["noise_seed_commitment"]:
            raise CheckFailed("the noise seed given does not open the run's commitment",
                              expected=ev.manifest["secrets"]["noise_seed_commitment"],
                              found=secrets.commitments()["noise_seed_commitment"])
        stats_path = inputs.stats or datachecks.default_stats_path(inputs.secrets)
        stats = datachecks.load_stats(stats_path) if stats_path is not None else None
        tokenized = _tokenized(inputs.base_model, ev.manifest, examples)
        result = datachecks.check_steps(manifest=ev.manifest, steps=ev.steps, secrets=secrets, tokenized=tokenized,
                                        stats=stats)
        ev.steps_full, ev.loss, ev.loss_status = result.full, result.loss, result.loss_status
        checks.passed("steps", result.summary)
    return secrets, examples


def _tokenized(base_model: Path | None, manifest: dict[str, Any], examples: list[Any]) -> Any:
    if base_model is None or not datachecks.tokenizer_available():
        return None
    from provenance.basemodel import load_tokenizer
    from provenance.batches import tokenize

    tokenizer = load_tokenizer(base_model)
    return tokenize(examples, tokenizer, max_length=int(manifest["dataset"]["max_length"]))


# --- replay ------------------------------------------------------------------------------------------------------


def _environment(ev: Evidence) -> tuple[determinism.Recorded, list[str]]:
    """The recorded settings, failing on impossible ones; and why this machine cannot match them (if it cannot)."""
    assert ev.manifest is not None
    rec = determinism.recorded(ev.manifest)
    invalid = determinism.invalid_settings(rec)
    if invalid:
        raise CheckFailed("the run records determinism settings no machine can have (a way to escape replay)",
                          expected="settings torch can run", found="; ".join(invalid))
    return rec, determinism.unmatched(rec)


def _beacon(ev: Evidence, registry: RegistryReader, inputs: AuditorInputs) -> rp.Beacon:
    final = ev.history.finalization
    block = None
    if final is not None:
        info = registry.block(int(final.block_number) + inputs.confirmations)
        if info is not None:
            block = (int(info.number), bytes(info.hash))
    if block is None and inputs.beacon is None:
        if final is None:
            raise CheckInconclusive("the run is not finalised, so its trainer could still extend it and re-roll "
                                    "which segments are sampled: replay every segment (--replay all) or add your "
                                    "own seed (--beacon)")
        raise CheckInconclusive(f"the beacon block ({inputs.confirmations} blocks after the finalisation in block "
                                f"{final.block_number}) is not mined yet: wait, pass --replay all, or add your own "
                                "seed (--beacon)")
    return rp.make_beacon(block=block, auditor_seed=inputs.beacon, confirmations=inputs.confirmations)


def _fetch(store: StoreReader, record: Any, target: Path) -> Path:
    from provenance.manifest import hash_directory

    if not target.exists():
        store.get_directory(record.manifest_cid, target)
    if hash_directory(target).digest() != record.checkpoint_digest:
        raise CheckFailed(f"checkpoint {record.index} fetched for replay is not the committed one",
                          expected=record.checkpoint_digest, found=hash_directory(target).digest())
    return target


def _jobs(ev: Evidence, store: StoreReader, chosen: list[int], with_zero: bool,
          work: Path) -> list[protocol.SegmentJob]:
    assert ev.leaves is not None
    jobs = []
    if with_zero:
        jobs.append(protocol.SegmentJob(None, 0, (0, 0), (), work / "rebuilt-000000"))
    for j in chosen:
        start, end = ev.lineage[j - 1], ev.lineage[j]
        rng = merkle.CompactRange()
        for leaf in ev.leaves[: start.log_size]:
            rng.append(leaf)
        source = _fetch(store, start, work / f"committed-{j - 1:06d}")
        jobs.append(protocol.SegmentJob(source, j, (start.log_size, end.log_size), rng.hashes,
                                        work / f"rebuilt-{j:06d}"))
    return jobs


def stage_replay(ev: Evidence, registry: RegistryReader, store: StoreReader, inputs: AuditorInputs,
                 usable: tuple[Secrets, list[Any]] | None, work: Path) -> None:
    checks = ev.checks
    want_replay = inputs.replay != "0"
    if inputs.base_model is None:
        checks.not_run("checkpoint_zero", "needs --base-model (checkpoint 0 is rebuilt from the base model)")
        checks.not_run("replay", "needs --base-model, --data and --secrets to re-run training steps")
        return
    if ev.manifest is None or ev.files is None or not checks.ok("base_model"):
        for check_id in ("checkpoint_zero", "replay"):
            checks.not_run(check_id, checks.why_missing("base_model" if ev.files is not None else "step_log",
                                                        "a verified base model and step log"))
        return
    if ev.step_format != STEP_FORMAT:
        why = (f"this run uses {ev.step_format} records, which this version cannot replay (v1 noise kept only 32 "
               "bits of its seed)")
        checks.inconclusive("checkpoint_zero", why)
        if want_replay:
            checks.inconclusive("replay", why)
        else:
            checks.not_run("replay", "--replay 0: no segment replayed")
        return
    candidates = list(range(1, len(ev.lineage)))
    section: dict[str, Any] = {"requested": inputs.replay, "beacon": None, "candidates": len(candidates),
                               "chosen": [], "catch_probability": None, "environment": None, "segments": []}
    chosen: list[int] = []
    with checks.run("replay"):
        if not want_replay:
            checks.not_run("replay", "--replay 0: no segment replayed")
        elif usable is None:
            checks.not_run("replay", checks.why_missing("dataset", "the committed dataset and the run's secrets"))
        elif inputs.replay == "all":
            chosen = candidates
        else:
            beacon = _beacon(ev, registry, inputs)
            section["beacon"] = beacon.to_json()
            chosen = rp.choose_segments(beacon.seed, candidates, int(inputs.replay))
        section["chosen"] = chosen
        section["catch_probability"] = rp.catch_probability(len(chosen), len(candidates)) if chosen else None
    _run_worker(ev, store, inputs, usable, chosen, section, work)
    ev.replay = section


def _run_worker(ev: Evidence, store: StoreReader, inputs: AuditorInputs, usable: tuple[Secrets, list[Any]] | None,
                chosen: list[int], section: dict[str, Any], work: Path) -> None:
    checks = ev.checks
    zero_pending = checks.status("checkpoint_zero") is None
    replay_pending = checks.status("replay") is None
    if not (zero_pending or replay_pending):
        return
    ids = [c for c, pending in (("checkpoint_zero", zero_pending), ("replay", replay_pending)) if pending]
    try:
        protocol.find_worker()
        rec, problems = _environment(ev)
    except (protocol.ReplayUnavailable, CheckFailed) as exc:
        for check_id in ids:
            if isinstance(exc, CheckFailed):
                checks.failed(check_id, str(exc).split(" (expected ")[0], expected=exc.expected, found=exc.found)
            else:
                checks.inconclusive(check_id, str(exc))
        return
    section["environment"] = {"recorded": rec.to_json(), "here": determinism.installed_versions(),
                              "bitwise_possible": not problems, "problems": problems}
    assert ev.manifest is not None and inputs.base_model is not None
    jobs = _jobs(ev, store, chosen if replay_pending else [], zero_pending, work)
    manifest_path = work / "run.json"
    from provenance.manifest import encode_run_manifest

    manifest_path.write_bytes(encode_run_manifest(ev.manifest))
    try:
        result = protocol.run_worker(
            manifest=manifest_path, base_model=inputs.base_model, data=inputs.data, secrets=inputs.secrets,
            jobs=jobs, env=determinism.replay_environment(rec), workdir=work,
            timeout=protocol.worker_timeout()) if jobs else protocol.WorkerResult()
    except ProvenanceError as exc:
        for check_id in ids:
            checks.inconclusive(check_id, f"the replay worker could not run here: {' '.join(str(exc).split())}")
        return
    problems = problems + _worker_environment_problems(rec, result.environment)
    section["environment"]["problems"] = problems
    section["environment"]["bitwise_possible"] = not problems
    from provenance._verify.judge import judge_segments

    judge_segments(ev, store, result, jobs, problems, section, zero_pending=zero_pending,
                   replay_pending=replay_pending)
    for job in jobs:
        shutil.rmtree(job.out, ignore_errors=True)


def _worker_environment_problems(rec: determinism.Recorded, actual: dict[str, Any]) -> list[str]:
    out = []
    if actual.get("cpu_capability") not in (None, rec.capability):
        out.append(f"the worker ran with CPU kernels {actual.get('cpu_capability')}, not the recorded "
                   f"{rec.capability}")
    if actual.get("threads") not in (None, rec.threads):
        out.append(f"the worker ran with {actual.get('threads')} threads, not the recorded {rec.threads}")
    return out
