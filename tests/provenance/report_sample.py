"""Realistic `prov.verify-report.v1` dicts, as the verifier builds them, for report tests and sample renders.

Hex values are derived from labels (`sha256(label)`), so every sample is deterministic and every field is
well-formed; tests mutate copies to exercise the failure paths.
"""

from __future__ import annotations

import base64
import hashlib
import math
from typing import Any

CHECK_TITLES = {
    "record": "Registry record",
    "checkpoint_manifest": "Checkpoint manifest",
    "run_manifest": "Run manifest",
    "history": "Checkpoint history",
    "step_log": "Step log",
    "committers": "Committers",
    "base_model": "Base model",
    "privacy": "Privacy guarantee",
    "dataset": "Training data",
    "replay": "Replay",
}


def hexof(label: str, nbytes: int = 32) -> str:
    return hashlib.sha256(label.encode()).hexdigest()[: 2 * nbytes]


def digest(label: str) -> str:
    return "sha256:" + hexof(label)


def address(label: str) -> str:
    return "0x" + hexof(label, 20)


def txhash(label: str) -> str:
    return "0x" + hexof(label)


def cid(label: str) -> str:
    """A CIDv1 (raw, sha256) in Kubo's base32 form: 'bafkrei' + 52 base32 characters."""
    raw = base64.b32encode(hashlib.sha256(label.encode()).digest()).decode().lower().rstrip("=")
    return "bafkrei" + raw


def _time(block: int) -> str:
    seconds = 10 * 3600 + 12 * (block - 1200)
    return f"2025-03-02T{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}Z"


def _epsilon(step: int, total: int) -> float:
    return round(3.21 * math.sqrt(step / total), 4)


def _check(cid_: str, status: str, summary: str, expected: str | None = None, found: str | None = None
           ) -> dict[str, Any]:
    return {"id": cid_, "title": CHECK_TITLES[cid_], "status": status, "summary": summary,
            "expected": expected, "found": found}


def _passed_checks(n: int, steps: int) -> list[dict[str, Any]]:
    return [
        _check("record", "passed", "The file's weights digest is registered on chain, in block 1264."),
        _check("checkpoint_manifest", "passed", "The checkpoint manifest matches its CID and names this file."),
        _check("run_manifest", "passed", "The run manifest matches the digest registered on chain."),
        _check("history", "passed", f"All {n} checkpoints chain back to the base model, in order."),
        _check("step_log", "passed", f"The step log of {steps} steps matches every committed log root."),
        _check("committers", "passed", "Every checkpoint was committed by the run's owner."),
        _check("base_model", "passed", "The base model digest matches the one named in the run manifest."),
        _check("privacy", "passed", "ε recomputed from the recorded parameters matches the committed ε."),
        _check("dataset", "passed", "Every replayed example is part of the committed dataset."),
        _check("replay", "passed", "2 randomly chosen segments were re-run and matched bit for bit."),
    ]


def sample_report(verdict: str = "verified", *, checkpoints: int = 5, every: int = 8, private: bool = True,
                  subject_index: int | None = None) -> dict[str, Any]:
    """A complete report. `verdict` picks the story: everything checks out, two checks fail, or no registry."""
    steps = checkpoints * every
    subject_index = checkpoints - 1 if subject_index is None else subject_index
    owner = address("owner")
    lineage = [{
        "index": i, "step": (i + 1) * every, "log_size": (i + 1) * every, "log_root": hexof(f"root{i}"),
        "weights_digest": digest(f"weights{i}"), "checkpoint_digest": digest(f"ckpt{i}"),
        "epsilon": _epsilon((i + 1) * every, steps) if private else None, "manifest_cid": cid(f"manifest{i}"),
        "tx": txhash(f"tx{i}"), "block": 1240 + 6 * i, "time": _time(1240 + 6 * i), "committer": owner,
        "is_subject": i == subject_index} for i in range(checkpoints)]
    subject_weights = lineage[subject_index]["weights_digest"] if lineage else digest("weights")
    report: dict[str, Any] = {
        "format": "prov.verify-report.v1", "verdict": "verified", "exit_code": 0,
        "verdict_text": "This adapter's lineage checks out: every check passed.",
        "generated_at": "2025-03-04T09:30:00Z", "prov_version": "0.1.0",
        "subject": {"path": "/home/alice/adapters/support-bot-v3/adapter_model.safetensors", "kind": "adapter",
                    "weights_digest": subject_weights},
        "chain": {"rpc_url": "http://127.0.0.1:8545", "chain_id": 31337, "registry": address("registry")},
        "store": {"backend": "kubo-rpc http://127.0.0.1:5001"},
        "run": {"run_id": hexof("run"), "owner": owner, "register_tx": txhash("register"),
                "register_block": 1234, "register_time": "2025-03-02T09:58:48Z", "manifest_cid": cid("run-manifest"),
                "manifest_digest": digest("run-manifest"),
                "base_model": {"digest": digest("base"), "name": "Qwen/Qwen2.5-0.5B"},
                "dataset_root": digest("dataset"), "examples": 1600, "steps_planned": steps},
        "dp": ({"mode": "dp", "noise_multiplier": 1.1, "max_grad_norm": 1.0, "sample_rate": 0.05, "delta": 1e-05,
                "accountant": "prv", "epsilon_budget": 8.0, "epsilon_committed": 3.21, "epsilon_recomputed": 3.21,
                "steps": steps} if private else
               {"mode": "non-private", "noise_multiplier": None, "max_grad_norm": None, "sample_rate": None,
                "delta": None, "accountant": None, "epsilon_budget": None, "epsilon_committed": None,
                "epsilon_recomputed": None, "steps": steps}),
        "lineage": lineage,
        "checks": _passed_checks(checkpoints, steps),
        "series": {"step": list(range(steps)),
                   "loss": [round(2.3 * math.exp(-s / (steps / 3)) + 0.85 + 0.06 * math.sin(1.7 * s), 4)
                            for s in range(steps)],
                   "epsilon": [[c["step"], c["epsilon"]] for c in lineage] if private else []},
        "replay": {"seed_block": 1290, "seed_hash": txhash("seed"), "requested": "2", "segments": [
            {"from_index": a, "to_index": a + 1, "steps": [(a + 1) * every, (a + 2) * every], "status": "passed",
             "bitwise": True, "weight_distance": 0.0, "first_divergence": None}
            for a in sorted({0, max(0, checkpoints - 2)}) if a + 1 < checkpoints]},
        "not_checked": [
            "Steps outside the replayed segments were checked through the step log only, not re-run.",
            "Whether the base model named 'Qwen/Qwen2.5-0.5B' is that model: only its digest was compared.",
            "What the training data contains: only that replayed examples belong to the committed dataset.",
        ],
    }
    if verdict == "failed":
        _make_failed(report)
    elif verdict == "error":
        _make_error(report)
    return report


def _make_failed(report: dict[str, Any]) -> None:
    by_id = {c["id"]: c for c in report["checks"]}
    by_id["step_log"].update(
        status="failed", summary="The step log does not match the log root committed with checkpoint 3.",
        expected=hexof("root3"), found=hexof("tampered-root3"))
    by_id["replay"].update(
        status="failed", summary="Re-running steps 32–39 gave different weights from step 35 on.",
        expected=digest("weights4"), found=digest("replayed-weights4"))
    segment = report["replay"]["segments"][-1]
    segment.update(status="failed", bitwise=False, weight_distance=0.0173, first_divergence={
        "step": 35, "field": "batch", "expected": digest("batch35"), "found": digest("other-batch35")})
    report.update(verdict="failed", exit_code=1,
                  verdict_text="2 of 10 checks failed: the step log and the replay do not match what was committed.")


def _make_error(report: dict[str, Any]) -> None:
    reason = "Not checked: it needs the registry record, which could not be read."
    report["checks"] = [
        _check("record", "skipped", "Could not reach the registry at http://127.0.0.1:8545 (connection refused)."),
        *(_check(i, "skipped", reason) for i in CHECK_TITLES if i != "record")]
    report.update(verdict="error", exit_code=2, run=None, dp=None, lineage=[], replay=None,
                  series={"step": [], "loss": [], "epsilon": []},
                  verdict_text="The registry could not be reached, so no check could run.",
                  not_checked=["Everything: no check could run without the registry record."])
