"""Judging what the replay worker rebuilt against what was committed (see provenance/_verify/replay.py).

A rebuilt checkpoint passes only with the committed checkpoint digest. Otherwise the report names the first
difference: a field that does not depend on floating point (always a failure), the first diverging step record, or
the first file of the checkpoint that differs (adapter, optimizer state, state.json, ...). A floating-point
difference on a machine that cannot match the recorded environment is inconclusive, with the weight distance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from provenance import replay as protocol
from provenance._verify import replay as rp
from provenance._verify.pipeline import Evidence
from provenance.manifest import MANIFEST_NAME, CheckpointManifest, hash_directory
from provenance.ports import StoreReader


def _first_file(rebuilt: Path, committed: CheckpointManifest) -> dict[str, Any] | None:
    path = rebuilt / MANIFEST_NAME
    if not path.is_file():
        return None
    mine = CheckpointManifest.decode(path.read_bytes(), source="rebuilt checkpoint")
    theirs = {f.path: f.digest for f in committed.files}
    for entry in mine.files:
        if theirs.get(entry.path) != entry.digest:
            return {"step": None, "field": f"file {entry.path}", "expected": str(theirs.get(entry.path)),
                    "found": str(entry.digest)}
    missing = sorted(set(theirs) - {f.path for f in mine.files})
    return {"step": None, "field": "files", "expected": ", ".join(missing), "found": "absent"} if missing else None


def _judge(ev: Evidence, store: StoreReader, job: protocol.SegmentJob, outcome: protocol.SegmentOutcome,
           problems: list[str]) -> dict[str, Any]:
    assert ev.files is not None and ev.steps is not None
    target = ev.lineage[job.index]
    a, b = job.steps
    item: dict[str, Any] = {"from_index": None if job.start is None else job.index - 1, "to_index": job.index,
                            "steps": [a, b], "status": "failed", "bitwise": False,
                            "expected": str(target.checkpoint_digest), "found": None, "weight_distance": None,
                            "first_divergence": None}
    if outcome.error is not None or not (job.out / MANIFEST_NAME).is_file():
        item["first_divergence"] = {"step": None, "field": "replay", "expected": "a rebuilt checkpoint",
                                    "found": outcome.error or "the worker wrote no checkpoint"}
        if outcome.resource:  # out of memory or disk here: undecided, never a pass
            item["status"] = "inconclusive"
        return item
    # The verifier hashes what the worker wrote itself: a worker's own word about its result is not evidence.
    rebuilt = hash_directory(job.out).digest()
    item["found"] = str(rebuilt)
    logged = ev.steps[a:b]
    exact = rp.exact_divergence(logged, outcome.records)
    if exact is not None:
        item["first_divergence"] = exact
        return item
    if rebuilt == target.checkpoint_digest:
        item.update(status="passed", bitwise=True)
        return item
    fields = rp.all_fields(logged[0]) if logged else []
    item["first_divergence"] = (rp.first_divergence(logged, outcome.records, fields)
                                or _first_file(job.out, ev.files[job.index].manifest))
    if problems:
        files = ev.files[job.index]
        committed = store.get_bytes(files.listing["adapter_model.safetensors"],
                                    max_size=files.manifest.file("adapter_model.safetensors").size)
        item["weight_distance"] = rp.weight_distance(job.out / "adapter_model.safetensors", committed)
        item["status"] = "inconclusive"
    return item


def _describe(item: dict[str, Any]) -> str:
    div = item["first_divergence"]
    where = "" if div is None else (f"; first difference at step {div['step']} ({div['field']})"
                                    if div.get("step") is not None else f"; first difference: {div['field']}")
    span = f"checkpoint {item['from_index']} → {item['to_index']}" if item["from_index"] is not None \
        else "checkpoint 0 from the base model"
    return f"rebuilding {span} did not reproduce the committed checkpoint{where}"


def judge_segments(ev: Evidence, store: StoreReader, result: protocol.WorkerResult, jobs: list[protocol.SegmentJob],
                   problems: list[str], section: dict[str, Any], *, zero_pending: bool, replay_pending: bool) -> None:
    checks = ev.checks
    items = [_judge(ev, store, job, result.outcome(job.index), problems) for job in jobs]
    section["segments"] = items
    zero = [i for i in items if i["from_index"] is None]
    rest = [i for i in items if i["from_index"] is not None]
    env_note = f" (this machine cannot match the recorded environment: {'; '.join(problems)})" if problems else ""
    short_of = next((str(i["first_divergence"]["found"]) for i in items if i["status"] == "inconclusive"
                     and i["first_divergence"] and "ran out of" in str(i["first_divergence"]["found"])), None)
    if short_of is not None:
        env_note += f" ({short_of}: free memory or disk, or replay fewer segments at a time)"
    if zero_pending and zero:
        item = zero[0]
        if item["status"] == "passed":
            checks.passed("checkpoint_zero", "rebuilt from the base model, the committed LoRA config and seed and a "
                                             "fresh optimizer: every byte matches the committed checkpoint 0")
        elif item["status"] == "inconclusive":
            checks.inconclusive("checkpoint_zero", "checkpoint 0 could not be rebuilt bit for bit here" + env_note)
        else:
            div = item["first_divergence"] or {}
            checks.failed("checkpoint_zero", _describe(item) + " (the trainer committed another initial adapter or "
                                                               "state)", expected=div.get("expected"),
                          found=div.get("found"))
    if not replay_pending:
        return
    failed = [i for i in rest if i["status"] == "failed"]
    unsure = [i for i in rest if i["status"] == "inconclusive"]
    if failed:
        div = failed[0]["first_divergence"] or {}
        checks.failed("replay", _describe(failed[0]), expected=div.get("expected"), found=div.get("found"))
    elif unsure:
        distances = ", ".join(f"{i['weight_distance']:.2e}" for i in unsure if i["weight_distance"] is not None)
        checks.inconclusive("replay", "replay could not be bitwise on this machine" + env_note
                            + (f"; relative weight distance {distances} (information only)" if distances else ""))
    elif not rest:
        checks.not_run("replay", "no segment to replay (the verified checkpoint is checkpoint 0)")
    else:
        chosen = [i["to_index"] for i in rest]
        total = section.get("candidates") or len(chosen)
        beacon = section.get("beacon")
        how = "every segment" if len(chosen) == total else f"segment(s) {chosen} of {total}"
        seed = ("a seed drawn at random here" if beacon is not None and beacon.get("auditor_seed_origin") == "drawn"
                else "the auditor's seed")
        source = "" if beacon is None else (f", chosen by block {beacon['block']}'s hash" if beacon["block"]
                                            is not None else f", chosen by {seed}")
        if beacon is not None and beacon["block"] is not None and beacon["auditor_seed"] is not None:
            source += f" and {seed}"
        checks.passed("replay", f"{how} rebuilt bit for bit: every byte of each committed checkpoint (weights, "
                                f"optimizer, RNG, sampler, accountant, log){source}")
