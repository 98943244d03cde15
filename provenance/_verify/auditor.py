"""The stages that use what only an auditor is given — the base model, the data, the run's secrets and private
statistics: the dataset root, the cheap pass over every step, checkpoint 0 rebuilt, and replay of segments."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from provenance import canonical, determinism, merkle
from provenance import replay as protocol
from provenance._verify import data as datachecks
from provenance._verify import replay as rp
from provenance._verify.checks import CheckFailed, CheckInconclusive, Checks, Status
from provenance._verify.pipeline import Evidence
from provenance.errors import ChainError, ProvenanceError
from provenance.ports import RegistryReader, StoreReader
from provenance.records import STEP_FORMAT, STEP_FORMAT_V3
from provenance.secrets import Secrets, keys_anchored


@dataclass(frozen=True)
class AuditorInputs:
    base_model: Path | None
    data: Path | None
    secrets: Path | None
    stats: Path | None
    replay: str  # "0", a count, or "all"
    beacon: str | None
    confirmations: int
    jobs: int = 1  # replay worker processes run at once (segments are independent given the committed checkpoints)


def stage_data(ev: Evidence, inputs: AuditorInputs,
               registry: RegistryReader | None = None) -> tuple[Secrets, list[Any]] | None:
    """Dataset root and every step's cheap fields. Returns the secrets and examples for replay, when usable."""
    checks = ev.checks
    if inputs.data is None or inputs.secrets is None:
        why = "needs --data and --secrets (the dataset and the run's secrets, given only to auditors)"
        checks.not_run("dataset", why)
        checks.not_run("steps", why)
        return None
    if ev.manifest is None or ev.run is None or not checks.ok("run_manifest"):
        checks.not_run("dataset", checks.why_missing("run_manifest", "a verified run manifest"))
        checks.not_run("steps", checks.why_missing("run_manifest", "a verified run manifest"))
        return None
    secrets = Secrets.load(inputs.secrets)
    examples: list[Any] = []
    with checks.run("dataset"):
        examples = datachecks.read_examples(inputs.data, ev.manifest)
        duplicated = datachecks.duplicate_note(examples)
        if duplicated is not None:  # the per-person guarantee is weaker than the stated ε: say so
            ev.warnings.append(f"the training data: {duplicated}")
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
        secrets = secrets.anchored(_keys_anchor(ev, registry))
        stats_path = inputs.stats or datachecks.default_stats_path(inputs.secrets)
        stats = datachecks.load_stats(stats_path, **_stats_bounds(ev)) if stats_path is not None else None
        # The tokenizer's files are parsed (by transformers, unbounded) only once the base model has the registered
        # digest (#22); otherwise batch contents go unchecked and the check says so.
        tokenized = _tokenized(inputs.base_model if checks.ok("base_model") else None, ev.manifest, examples)
        result = datachecks.check_steps(manifest=ev.manifest, steps=ev.steps, secrets=secrets, tokenized=tokenized,
                                        stats=stats, tokenizer_note=_tokenizer_note(ev.manifest))
        ev.steps_full, ev.loss, ev.loss_status = result.full, result.loss, result.loss_status
        checks.passed("steps", result.summary)
    return secrets, examples


def _keys_anchor(ev: Evidence, registry: RegistryReader | None) -> bytes | None:
    """The hash of the block that included the run's registration, read from the chain, for a run whose sampler and
    noise keys derive from it (prov.keys.v1); None for older formats (their keys are the seed's alone)."""
    if not keys_anchored(ev.manifest):
        return None
    info = registry.block(int(ev.run.block_number)) if registry is not None else None
    if info is None:
        raise CheckInconclusive(f"the node did not return block {ev.run.block_number}, which includes the run's "
                                "registration: this run's sampling keys derive from its hash (prov.keys.v1)")
    logged = getattr(ev.run, "block_hash", None)
    if logged is not None and bytes(logged) != bytes(info.hash):
        # the node contradicts itself: its answer decides nothing about the run (could not verify, never FAILED)
        raise ChainError(f"the node's block {ev.run.block_number} has hash 0x{bytes(info.hash).hex()}, but "
                                f"the run's registration log says it is in block 0x{bytes(logged).hex()}: ask "
                                "another node")
    return bytes(info.hash)


def _stats_bounds(ev: Evidence) -> dict[str, Any]:
    """How many statistics lines the run can have: its largest committed step log (and whether it was
    finalised, after which no step may follow), so a hostile stats.jsonl is refused before it is read (#22)."""
    checkpoints = list(getattr(ev.history, "checkpoints", None) or ev.lineage)
    sizes = [int(c.log_size) for c in checkpoints]
    if not sizes:
        return {}
    return {"run_steps": max(sizes), "finished": getattr(ev.history, "finalization", None) is not None}


def _tokenizer_note(manifest: dict[str, Any]) -> str | None:
    """Why tokenizing here may not give the run's tokens (other transformers/tokenizers versions), or None."""
    recorded = (manifest.get("software") or {}).get("versions") or {}
    here = determinism.installed_versions()
    differ = [f"{name} {recorded.get(name)} (here {here.get(name)})" for name in ("transformers", "tokenizers")
              if isinstance(recorded, dict) and recorded.get(name) not in (None, here.get(name))]
    return f"the run tokenized with {', '.join(differ)}" if differ else None


def _tokenized(base_model: Path | None, manifest: dict[str, Any], examples: list[Any]) -> Any:
    if base_model is None or not datachecks.tokenizer_available():
        return None
    from provenance.basemodel import load_tokenizer
    from provenance.batches import tokenize_records

    tokenizer = load_tokenizer(base_model)
    kind = manifest["dataset"].get("kind", "text")
    return tokenize_records(examples, tokenizer, kind=kind, max_length=int(manifest["dataset"]["max_length"]))


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
    """The seed of the segment draw: the auditor's seed (`--beacon`, or else one drawn here at random), mixed with
    the hash of a block after the run's finalisation when there is one. Never the block alone: the trainer knows
    it before shipping (and picks it on its own chain), so it could finalise several runs, each forging another
    segment, and ship the one whose draw misses its forgery."""
    final = ev.history.finalization
    seed, origin = (inputs.beacon, "given") if inputs.beacon is not None else (rp.drawn_seed(), "drawn")
    block = None
    if final is not None:
        info = registry.block(int(final.block_number) + inputs.confirmations)
        if info is not None:
            block = (int(info.number), bytes(info.hash))
    return rp.make_beacon(block=block, auditor_seed=seed, confirmations=inputs.confirmations, seed_origin=origin)


def _steps_added(records: list[Any]) -> list[int]:
    """Indices j ≥ 1 of checkpoints that add steps (the segments a sample is drawn from)."""
    return [j for j in range(1, len(records)) if records[j].log_size > records[j - 1].log_size]


def _fetch(store: StoreReader, record: Any, target: Path) -> Path:
    from provenance._verify.fetch import can_fetch_listed, fetch_listed
    from provenance.manifest import hash_directory

    if not target.exists():
        if can_fetch_listed(store):  # only the files the committed manifest lists, each capped by its size (#22)
            fetch_listed(store, record, target)
        else:
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
    if not checks.ok("run_manifest"):
        for check_id in ("checkpoint_zero", "replay"):
            checks.not_run(check_id, checks.why_missing("run_manifest", "a verified run manifest"))
        return
    if ev.manifest is None or ev.files is None or not checks.ok("base_model"):
        for check_id in ("checkpoint_zero", "replay"):
            checks.not_run(check_id, checks.why_missing("base_model" if ev.files is not None else "step_log",
                                                        "a verified base model and step log"))
        return
    if ev.step_format not in (STEP_FORMAT, STEP_FORMAT_V3):
        why = (f"this run uses {ev.step_format} records, which this version does not replay (its verdict stops at "
               "commitments and data)")
        checks.not_run("checkpoint_zero", why)
        if want_replay:  # asked for and impossible: never a verdict that hides it
            checks.inconclusive("replay", why + "; pass --replay 0 for the verdict without replay")
        else:
            checks.not_run("replay", why)
        return
    lineage = _steps_added(ev.lineage)  # this file's segments
    section: dict[str, Any] = {"requested": inputs.replay, "beacon": None, "candidates": len(lineage),
                               "chosen": [], "catch_probability": None, "environment": None, "segments": []}
    chosen: list[int] = []
    with checks.run("replay"):
        if not want_replay:
            checks.not_run("replay", "--replay 0: no segment replayed")
        elif usable is None:
            checks.not_run("replay", checks.why_missing("dataset", "the committed dataset and the run's secrets"))
        elif checks.status("steps") is Status.FAILED:
            checks.not_run("replay", checks.why_missing("steps", "every step recomputed from the data and secrets"))
        elif inputs.replay == "all":
            chosen = lineage
            section["catch_probability"] = 1.0 if lineage else None
        else:
            # Drawn over every segment of the whole (finalised) run, whichever checkpoint is verified, so that
            # shipping an earlier or later checkpoint cannot re-roll the sample.
            beacon = _beacon(ev, registry, inputs)
            section["beacon"] = beacon.to_json()
            run_segments = _steps_added(list(ev.history.checkpoints))
            count = (rp.default_count(len(run_segments)) if inputs.replay == rp.AUTO
                     else max(1, int(inputs.replay)))
            own = lineage[-1] if lineage else None  # the file's own last segment: always re-run
            drawn = rp.choose_segments(beacon.seed, run_segments, count, always=own)
            chosen = [j for j in drawn if j <= ev.record.index]
            section["drawn"] = drawn
            section["catch_probability"] = rp.catch_probability(len(drawn), len(run_segments),
                                                                forced=own is not None)
            if not chosen and lineage:
                checks.not_run("replay", f"the segments drawn for this run ({drawn}) all lie after this checkpoint: "
                                         "pass --replay all to re-run this lineage")
        section["chosen"] = chosen
    _run_worker(ev, store, inputs, usable, chosen, section, work)
    ev.replay = section


def _run_worker(ev: Evidence, store: StoreReader, inputs: AuditorInputs, usable: tuple[Secrets, list[Any]] | None,
                chosen: list[int], section: dict[str, Any], work: Path) -> None:
    """Rebuild checkpoint 0 and the chosen segments in one worker process and judge them. Whatever goes wrong on
    the way (a store error, content that does not parse) becomes the result of every check still pending."""
    checks = ev.checks
    ids = [c for c in ("checkpoint_zero", "replay") if checks.status(c) is None]
    if not ids:
        return
    probe = Checks()
    with probe.run("replay"):
        _rebuild_and_judge(ev, store, inputs, chosen, section, work, zero_pending="checkpoint_zero" in ids,
                           replay_pending="replay" in ids, keys_anchor=None if usable is None else usable[0].anchor)
    outcome = probe.results.get("replay")
    if outcome is not None:
        for check_id in ids:
            if checks.status(check_id) is None:
                checks.set(check_id, outcome.status, outcome.summary, expected=outcome.expected, found=outcome.found)
        checks.reach_error = checks.reach_error or probe.reach_error


def _rebuild_and_judge(ev: Evidence, store: StoreReader, inputs: AuditorInputs, chosen: list[int],
                       section: dict[str, Any], work: Path, *, zero_pending: bool, replay_pending: bool,
                       keys_anchor: bytes | None = None) -> None:
    try:
        protocol.find_worker()
    except protocol.ReplayUnavailable as exc:
        raise CheckInconclusive(str(exc)) from None
    rec, problems = _environment(ev)
    section["environment"] = {"recorded": rec.to_json(),
                              "here": {"versions": determinism.installed_versions(),
                                       "cpu_capabilities": sorted(determinism.machine_capabilities())},
                              "bitwise_possible": not problems, "problems": problems}
    assert ev.manifest is not None and inputs.base_model is not None
    jobs = _jobs(ev, store, chosen if replay_pending else [], zero_pending, work)
    manifest_path = work / "run.json"
    from provenance.manifest import encode_run_manifest

    manifest_path.write_bytes(encode_run_manifest(ev.manifest))
    try:
        result, environments = _run_workers(jobs, manifest=manifest_path, inputs=inputs,
                                            env=determinism.replay_environment(rec), work=work, keys_anchor=keys_anchor)
    except ProvenanceError as exc:
        raise CheckInconclusive("the replay worker could not run here: "
                                f"{_scrub(str(exc), inputs)}") from None
    for environment in environments:
        problems = problems + [p for p in _worker_environment_problems(rec, environment) if p not in problems]
    shards = result.environment.get("shard_threads")
    if canonical.is_count(shards, 1):
        section["environment"]["here"]["shard_threads"] = shards
    section["environment"]["problems"] = problems
    section["environment"]["bitwise_possible"] = not problems
    from provenance._verify.judge import judge_segments

    scrubbed = protocol.WorkerResult(result.environment, tuple(
        replace(o, error=None if o.error is None else _scrub(o.error, inputs)) for o in result.segments))
    judge_segments(ev, store, scrubbed, jobs, problems, section, zero_pending=zero_pending,
                   replay_pending=replay_pending)
    for job in jobs:
        shutil.rmtree(job.out, ignore_errors=True)


def _run_workers(jobs: list[protocol.SegmentJob], *, manifest: Path, inputs: AuditorInputs, env: dict[str, str],
                 work: Path, keys_anchor: bytes | None = None) -> tuple[protocol.WorkerResult, list[dict[str, Any]]]:
    """Run the jobs in `inputs.jobs` worker processes at once (round-robin groups, each in its own directory),
    showing a bar that advances as each rebuilt checkpoint appears (the worker renames it into place whole).
    Returns the merged result (outcomes keyed by segment index) and every worker's reported environment."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from provenance import progress

    if not jobs:
        return protocol.WorkerResult(), []
    base_model = inputs.base_model
    assert base_model is not None
    count = max(1, min(inputs.jobs, len(jobs)))
    groups = [jobs[g::count] for g in range(count)]

    def run(g: int) -> protocol.WorkerResult:
        where = work if count == 1 else work / f"worker-{g}"
        where.mkdir(exist_ok=True)
        return protocol.run_worker(manifest=manifest, base_model=base_model, data=inputs.data,
                                   secrets=inputs.secrets, jobs=groups[g], env=env, workdir=where,
                                   timeout=protocol.worker_timeout(), keys_anchor=keys_anchor)

    label = "replay" if count == 1 else f"replay ({count} workers)"
    with progress.bar(label, total=len(jobs), unit="segment") as bar, \
            ThreadPoolExecutor(max_workers=count, thread_name_prefix="prov-replay") as pool:
        futures = [pool.submit(run, g) for g in range(count)]
        shown = 0
        while bar.active and not all(f.done() for f in futures):
            done = sum(1 for job in jobs if job.out.exists())
            bar.advance(done - shown)
            shown = done
            time.sleep(0.25)
        results = [f.result() for f in futures]
    segments = tuple(o for r in results for o in r.segments)
    environments = [r.environment for r in results]
    return protocol.WorkerResult(environments[0], segments), environments


def _scrub(text: str, inputs: AuditorInputs) -> str:
    """A worker's message without the auditor's local paths (reports are filed and may be published)."""
    text = " ".join(text.split())
    for path in (inputs.data, inputs.base_model, inputs.secrets, inputs.stats):
        if path is not None:
            text = text.replace(str(path.resolve()), path.name).replace(str(path), path.name)
    return text[:300]


def _worker_environment_problems(rec: determinism.Recorded, actual: dict[str, Any]) -> list[str]:
    out = []
    if actual.get("cpu_capability") not in (None, rec.capability):
        out.append(f"the worker ran with CPU kernels {actual.get('cpu_capability')}, not the recorded "
                   f"{rec.capability}")
    if actual.get("threads") not in (None, rec.threads):
        out.append(f"the worker ran with {actual.get('threads')} threads, not the recorded {rec.threads}")
    return out
