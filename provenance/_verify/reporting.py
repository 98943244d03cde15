"""Build the `prov.verify-report.v2` document from what a verification established (docs/report-schema.md).

Nothing local or secret goes in: the subject is named by its file name, the RPC endpoint by scheme, host and port
(API keys live in URL paths and queries), the store by its kind; per-step loss appears only when the auditor
supplied the run's private statistics (or the run is a v1 run that published them).
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any
from urllib.parse import urlsplit

from provenance._verify.checks import Status
from provenance._verify.pipeline import Evidence
from provenance.ports import RegistryReader, StoreReader
from provenance.report import level_text


def _iso(timestamp: int | None) -> str | None:
    if not timestamp:
        return None
    return _dt.datetime.fromtimestamp(timestamp, _dt.UTC).isoformat().replace("+00:00", "Z")


def _eps(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else value


def public_rpc(url: str | None) -> str | None:
    """scheme://host[:port] of an RPC URL: never its path, query or credentials (where API keys live)."""
    if not url:
        return None
    if "://" not in url:
        return url if url == "tester" else "(local)"
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def public_store(spec: str | None) -> str | None:
    """The store's kind and, for a node, its endpoint; never a local path."""
    if not spec:
        return None
    kind, _, rest = spec.partition(":")
    if kind == "kubo" and rest:
        return "kubo " + (public_rpc(rest) or "") if "://" in rest else "kubo " + rest
    return kind


def level_of(ev: Evidence, verdict: str) -> dict[str, Any]:
    replay = ev.replay or {}
    chosen = [s for s in replay.get("segments", []) if s.get("from_index") is not None]
    candidates = int(replay.get("candidates") or 0)
    level: dict[str, Any] = {"name": None, "replayed": len(chosen), "segments": candidates,
                             "catch_probability": replay.get("catch_probability"), "text": ""}
    if verdict == "verified":
        checks = ev.checks
        data = checks.ok("dataset") and checks.ok("steps") and ev.steps_full
        replayed = checks.ok("replay")
        zero = checks.ok("checkpoint_zero")
        if data and zero and ((replayed and len(chosen) == candidates) or candidates == 0):
            level["name"] = "full"
        elif data and replayed:
            level["name"] = "sampled"
        elif data:
            level["name"] = "data"
        else:
            level["name"] = "commitments"
    final = None if ev.history is None or ev.record is None else ev.history.finalization is not None
    level["text"] = level_text(verdict, level["name"], replayed=len(chosen), segments=candidates,
                               dev_chain=ev.chain.get("dev_chain"), finalized=final)
    return level


def _next_steps(ev: Evidence, verdict: str, registry: RegistryReader) -> list[str]:
    checks = ev.checks
    failed = [r for r in checks.ordered() if r.status is Status.FAILED]
    out: list[str] = []
    if verdict == "failed" and checks.status("record") is Status.FAILED and ev.subject.kind == "merged":
        out.append(f"No run on registry {registry.address} committed these merged weights: for a converted or "
                   "re-sharded copy pass --base-model and --adapter (the run's adapter) to recompute the merge; "
                   "otherwise check you were given the model the trainer finalised, and the right --registry.")
    elif verdict == "failed" and checks.status("record") is Status.FAILED:
        out.append(f"This file has no valid on-chain record on registry {registry.address}: check you were given "
                   "the file the trainer anchored, and the right --registry and --rpc.")
    elif verdict == "failed":
        out.append(f"Do not rely on this file's claimed lineage: {failed[0].summary}.")
    elif verdict == "error":
        out.append(f"Retry once the chain and the store are reachable ({ev.checks.reach_error}).")
    elif verdict == "inconclusive":
        unsure = [r for r in checks.ordered() if r.status is Status.INCONCLUSIVE]
        out.append(f"Nothing failed, but this could not be decided here: {unsure[0].summary}.")
    if verdict in ("verified", "inconclusive"):
        if checks.status("dataset") is Status.NOT_RUN:
            out.append("For a stronger verdict, obtain the training data, the run's secrets.json and stats.jsonl, "
                       "and the base model from the trainer, and pass --data --secrets --base-model.")
        elif (ev.replay or {}).get("requested") not in (None, "all") and checks.ok("replay"):
            out.append("To re-run every segment instead of a sample, pass --replay all.")
    return out


def _run_section(ev: Evidence) -> dict[str, Any] | None:
    run, manifest = ev.run, ev.manifest or {}
    if run is None:
        return None
    final = ev.history.finalization if ev.history is not None else None
    merged = getattr(final, "merged_tensor_digest", None) if final is not None else None
    return {
        "run_key": run.run_key.hex(), "run_id": run.run_id.hex(), "owner": run.owner,
        "manifest_owner": manifest.get("owner"), "register_tx": run.tx_hash, "register_block": run.block_number,
        "register_time": _iso(run.block_timestamp), "manifest_cid": run.manifest_cid,
        "manifest_digest": str(run.manifest_digest),
        "base_model": {"digest": str(run.base_model_digest),
                       "name": _text_or_none((manifest.get("base_model") or {}).get("name"))},
        "dataset_root": str(run.dataset_root), "examples": _int_or_none((manifest.get("dataset") or {}).get("size")),
        "steps_planned": _int_or_none((manifest.get("training") or {}).get("steps")),
        "formats": _formats(manifest, ev.step_format),
        "finalized": None if final is None else {
            "block": final.block_number, "time": _iso(getattr(final, "block_timestamp", None)),
            "tx": final.tx_hash, "merged_tensor_digest": None if merged is None else str(merged)},
    }


def _formats(manifest: dict[str, Any], step_format: str) -> dict[str, str]:
    formats = manifest.get("formats")
    if isinstance(formats, dict):
        return {str(k)[:40]: str(v)[:60] for k, v in formats.items() if isinstance(v, str)}
    return {"run": str(manifest.get("format"))[:60], "step": step_format}


def _dp_section(ev: Evidence) -> dict[str, Any] | None:
    if ev.manifest is None:
        return None
    dp = ev.manifest["training"].get("dp", {})

    def num(key: str) -> float | None:
        try:
            value = float(dp.get(key))
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None

    return {
        "mode": dp.get("mode") if dp.get("mode") in ("dp", "non-private") else None,
        "noise_multiplier": num("noise_multiplier"), "max_grad_norm": num("max_grad_norm"),
        "sample_rate": num("sample_rate"), "delta": num("delta"), "accountant": _text_or_none(dp.get("accountant"), 20),
        "epsilon_budget": num("epsilon_budget"),
        "epsilon_committed": _eps(ev.record.epsilon) if ev.record is not None else None,
        "epsilon_recomputed": ev.privacy.last if ev.privacy is not None else None,
        "epsilon_checked": sum(e is not None for e in ev.privacy.recomputed) if ev.privacy is not None else 0,
        "steps": ev.record.log_size if ev.record is not None else 0,
        "statement": ev.privacy.statement if ev.privacy is not None and ev.privacy.statement else None,
    }


def _lineage(ev: Evidence) -> list[dict[str, Any]]:
    recomputed = ev.privacy.recomputed if ev.privacy is not None else []
    out = []
    for position, r in enumerate(ev.lineage):
        tensors = getattr(r, "tensor_digest", None)
        out.append({
            "index": r.index, "step": r.log_size, "log_size": r.log_size, "log_root": r.log_root.hex,
            "weights_digest": str(r.weights_digest), "tensor_digest": None if tensors is None else str(tensors),
            "checkpoint_digest": str(r.checkpoint_digest), "epsilon": _eps(r.epsilon),
            "epsilon_recomputed": recomputed[position] if position < len(recomputed) else None,
            "manifest_cid": r.manifest_cid, "tx": r.tx_hash, "block": r.block_number, "time": _iso(r.block_timestamp),
            "committer": r.committer, "is_subject": ev.record is not None and r.index == ev.record.index,
        })
    return out


def _claims(ev: Evidence) -> list[dict[str, Any]]:
    return [{"run_key": c.record.run_key.hex(), "run_id": c.record.run_id.hex(), "owner": c.record.committer,
             "index": c.record.index, "block": c.record.block_number, "time": _iso(c.record.block_timestamp),
             "tx": c.record.tx_hash, "match": c.match, "selected": c.selected, "note": c.note} for c in ev.claims]


def build_report(ev: Evidence, *, verdict: str, exit_code: int, registry: RegistryReader, store: StoreReader,
                 generated_at: str, prov_version: str, report_format: str, options: Any) -> dict[str, Any]:
    steps = ev.steps or []
    meta = ev.subject.metadata
    rpc = getattr(getattr(registry, "transport", None), "rpc_url", None)
    return {
        "format": report_format, "verdict": verdict, "exit_code": exit_code, "level": level_of(ev, verdict),
        "verdict_text": _verdict_text(ev, verdict), "next_steps": _next_steps(ev, verdict, registry),
        "generated_at": generated_at, "prov_version": prov_version,
        "subject": {"path": ev.subject.path.name, "kind": ev.subject.kind,
                    "weights_digest": str(ev.subject.weights_digest),
                    "tensor_digest": None if ev.tensor_digest is None else str(ev.tensor_digest),
                    "run_id": _hex_or_none(meta.get("prov.run_id")),
                    "checkpoint": _int_or_none(meta.get("prov.checkpoint"))},
        "chain": {"chain_id": ev.chain.get("chain_id"), "genesis_hash": ev.chain.get("genesis_hash"),
                  "registry": registry.address, "registry_version": registry.version, "rpc": public_rpc(rpc),
                  "dev_chain": ev.chain.get("dev_chain"), "expected_chain_id": options.expected_chain_id,
                  "expected_registry": options.expected_registry},
        "store": {"backend": public_store(getattr(store, "spec", None))},
        "run": _run_section(ev), "claims": _claims(ev), "dp": _dp_section(ev), "lineage": _lineage(ev),
        "checks": ev.checks.to_json(),
        "series": {"step": [s.step for s in steps], "loss": ev.loss, "loss_status": ev.loss_status,
                   "epsilon": [[r.log_size, _eps(r.epsilon)] for r in ev.lineage if _eps(r.epsilon) is not None]},
        "replay": ev.replay, "warnings": list(ev.warnings),
        "not_checked": list(ev.notes),
        "attestations": ev.attestations,
        # who ran it and how; the id (provenance.report.seal) is set once the report is complete
        "audit": {"auditor": getattr(options, "auditor", None), "command": getattr(options, "command", None),
                  "report_id": None,
                  "statistics": "private" if ev.loss is not None and ev.loss_status == "checked" else "none"},
    }


def _int_or_none(value: Any) -> int | None:
    """An integer from untrusted text or JSON (a file's metadata, a manifest), or None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def _text_or_none(value: Any, limit: int = 200) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def _hex_or_none(value: Any) -> str | None:
    if isinstance(value, str) and len(value) == 64 and value.isascii():
        try:
            bytes.fromhex(value)
            return value.lower()
        except ValueError:
            return None
    return None


def _verdict_text(ev: Evidence, verdict: str) -> str:
    failed = [r.id for r in ev.checks.ordered() if r.status is Status.FAILED]
    if verdict == "verified":
        what = "merged model's" if ev.subject.kind == "merged" else "adapter's"
        text = f"This {what} lineage checks out against the on-chain record."
        if level_of(ev, verdict)["name"] == "data":  # what this level does NOT prove (#20): say it in the verdict
            text += (" At this level the training LOG agrees with the data, the secrets and the plan (each step's "
                     "committed batch is what the sampler draws from the data); what the optimizer consumed is "
                     "proven only by replay.")
        return text
    if verdict == "failed":
        return f"{len(failed)} check(s) failed: {', '.join(failed)}."
    if verdict == "inconclusive":
        unsure = [r.id for r in ev.checks.ordered() if r.status is Status.INCONCLUSIVE]
        return f"Nothing failed, but {', '.join(unsure)} could not be decided on this machine."
    return f"Verification could not run: {ev.checks.reach_error or 'a required check did not run'}."
