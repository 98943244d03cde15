"""The sentences a verify report is read in, shared by the terminal text, the HTML page and the exports so each
fact is worded once: numbers, times, the privacy guarantee, the replay sample, the loss curve, the chain, and the
checks with not-run checks that share a reason said once."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DEV_CHAIN_WARNING = ("local development chain {label}: its timestamps and block hashes are controlled by whoever "
                     "runs it")
STATUS_WORDS = {"passed": "passed", "failed": "FAILED", "inconclusive": "INCONCLUSIVE", "not_run": "not run",
                "skipped": "skipped"}


def num(value: Any) -> str:
    """A number as a person writes it: `1.0`, `0.05`, `1e-05`, `3.215`; `—` for unknown."""
    if value is None:
        return "—"
    if isinstance(value, float):
        text = repr(value)
        return text if len(text) <= 7 else f"{value:.4g}"
    return str(value)


def percent(p: float) -> str:
    """6.7%, 100%, 0.1%: one decimal, none when whole."""
    text = f"{100 * p:.1f}"
    return (text.removesuffix(".0") if text.endswith(".0") else text) + "%"


def when(value: str | None) -> str:
    if value is None:
        return "—"
    moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def short(value: str, keep: int = 8) -> str:
    body = value.removeprefix("sha256:")
    return body if len(body) <= 2 * keep + 2 else f"{body[:keep + 2 * body.startswith('0x')]}…{body[-4:]}"


def counts(report: dict[str, Any]) -> str:
    statuses = [c["status"] for c in report["checks"]]
    parts = [f"{statuses.count(s)} {STATUS_WORDS[s].lower()}" for s in ("passed", "failed", "inconclusive", "not_run")
             if s != "inconclusive" or s in statuses]
    return f"{len(statuses)} checks: " + ", ".join(parts)


def privacy_sentence(dp: dict[str, Any] | None) -> str:
    """The privacy guarantee in one or two plain sentences."""
    if dp is None:
        return "Differential privacy: unknown (the run's privacy settings could not be read)."
    if dp["mode"] == "non-private":
        return "Not private: trained without differential privacy."
    # ε is committed on chain in millionths: a difference below that is rounding, not disagreement.
    committed, recomputed, budget = dp["epsilon_committed"], dp["epsilon_recomputed"], dp["epsilon_budget"]
    eps = recomputed if recomputed is not None else committed
    parts = [f"(ε = {num(eps)}, δ = {num(dp['delta'])})-DP for each training example" if eps is not None
             else "trained with DP-SGD, but no ε was recorded"]
    if dp["accountant"]:
        parts.append(f"{dp['accountant'].upper()} accountant")
    for key, label in (("noise_multiplier", "noise multiplier"), ("max_grad_norm", "clipping")):
        if dp[key] is not None:
            parts.append(f"{label} {num(dp[key])}")
    rate = f"sample rate {num(dp['sample_rate'])} over " if dp["sample_rate"] is not None else ""
    parts.append(f"{rate}{dp['steps']} steps")
    text = "Differential privacy: " + ", ".join(parts) + "."
    if dp.get("statement"):  # the verifier's privacy statement (provenance._verify.privacy.privacy_statement)
        text += " " + " ".join(dp["statement"])
    agree = committed is None or recomputed is None or math.isclose(committed, recomputed, rel_tol=1e-6,
                                                                     abs_tol=1e-6)
    if not agree and committed > recomputed:  # the verifier's ε is its own upper bound: a larger claim is safe
        text += f" The trainer committed ε = {num(committed)}, at least the verifier's own bound."
    elif not agree:
        text += f" The trainer committed ε = {num(committed)}; recomputed from its parameters: {num(recomputed)}."
    if budget is None:
        text += " No ε budget was set."
    elif eps is None:
        text += f" Budget {num(budget)}: unknown whether it was kept."
    else:
        text += f" Budget {num(budget)}: " + ("within budget." if eps <= budget else "OVER BUDGET.")
    return text


def epsilon_checked_sentence(report: dict[str, Any]) -> str | None:
    dp, total = report["dp"], len(report["lineage"])
    if dp is None or dp["mode"] != "dp" or "epsilon_checked" not in dp:
        return None
    return f"ε was recomputed from the recorded parameters for {dp['epsilon_checked']} of {total} checkpoints."


def replay_sentence(report: dict[str, Any]) -> str | None:
    """`replayed 2 of 30 segments: a single forged segment is caught with probability 6.7%`."""
    replay = report["replay"]
    if replay is None:
        return None
    chosen, total = len(replay["chosen"]), replay["candidates"]
    if total and chosen == total:
        return f"replayed all {total} segments"
    text = f"replayed {chosen} of {total} segments"
    p = replay["catch_probability"]
    if p is not None and replay.get("beacon") is not None:  # sampled: the file's own last segment is always drawn
        return text + f", the last always: a forged earlier one is caught with probability ≥ {percent(p)}"
    return text + (f": a single forged segment is caught with probability {percent(p)}" if p is not None else "")


def beacon_sentence(replay: dict[str, Any]) -> str | None:
    beacon = replay["beacon"]
    if beacon is None:
        return None
    seed = beacon["auditor_seed"]
    if seed is not None and beacon.get("auditor_seed_origin") == "drawn":
        seed_text = (f"a seed this verifier drew at random when it ran ({short(seed)}; replay.beacon.auditor_seed "
                     "of the JSON report holds it whole: pass it as --beacon to repeat the draw)")
    else:
        seed_text = f"the auditor's seed {seed!r}"
    if beacon["block"] is None:
        return f"Segments were drawn from {seed_text}."
    text = (f"Segments were drawn from the hash of block {beacon['block']} ({short(beacon['hash'])}), "
            f"{beacon['confirmations']} confirmations after the run's last commitment")
    if seed is not None:
        text += f", mixed with {seed_text}"
    return text + "."


def environment_lines(replay: dict[str, Any]) -> list[str]:
    env = replay.get("environment")
    if env is None:
        return []
    recorded, here = env["recorded"], env["here"]
    head = ("Bit-for-bit replay is possible on this machine." if env["bitwise_possible"] else
            "Bit-for-bit replay is NOT possible on this machine: differences are information only.")
    settings = [f"profile {recorded.get('profile') or 'native'}", f"CPU kernels {recorded.get('capability')}",
                f"{recorded.get('threads')} threads", f"{recorded.get('device')} {recorded.get('dtype')}"]
    if recorded.get("env"):
        settings.append(" ".join(f"{k}={v}" for k, v in sorted(recorded["env"].items())))
    lines = [head, *env["problems"],
             "The replay worker ran with the run's recorded settings: " + ", ".join(settings) + "."]
    shards = here.get("shard_threads")
    if isinstance(shards, int) and shards > 1:
        lines.append(f"It computed the shards of each step {shards} at a time, each as its rank did.")
    wanted, installed = recorded.get("versions") or {}, here.get("versions") or {}
    differ = [f"{k} {wanted[k]} recorded, {installed.get(k, 'absent')} here" for k in sorted(wanted)
              if k != "python" and k in installed and wanted[k] != installed[k]]
    same = [f"{k} {wanted[k]}" for k in sorted(wanted) if k in installed and wanted[k] == installed[k]]
    if differ:
        lines.append("Package versions differ: " + "; ".join(differ) + ".")
    elif same:
        lines.append("Package versions match the run's: " + ", ".join(same) + ".")
    return lines


def segment_span(segment: dict[str, Any]) -> str:
    start = "base model" if segment["from_index"] is None else f"checkpoint {segment['from_index']}"
    a, b = segment["steps"]
    steps = f"steps {a}–{b - 1}" if b > a else "no steps"
    return f"{start} → checkpoint {segment['to_index']}, {steps}"


def loss_sentence(report: dict[str, Any]) -> str:
    series = report["series"]
    loss, status = series["loss"], series["loss_status"]
    if status == "withheld":
        return ("Training loss: withheld (private): the run publishes only salted commitments to its per-step "
                "statistics; an auditor given the run's secrets and statistics checks them.")
    values = f": {len(loss)} steps, {num(loss[0])} → {num(loss[-1])}." if loss else "."
    if status == "checked":
        return ("Training loss: checked against the committed per-step statistics" + values if loss is not None
                else "Training loss: checked by the auditor; the values are left out of this published report.")
    return ("Training loss: public in this v1 run's step log (outside the DP guarantee)"
            + (values if loss is not None else "; the values are left out of this report."))


def chain_sentence(chain: dict[str, Any]) -> str:
    parts = [f"chain id {num(chain['chain_id'])}"]
    if chain["genesis_hash"]:
        parts.append(f"genesis {short(chain['genesis_hash'])}")
    version = f" (v{chain['registry_version']})" if chain["registry_version"] else ""
    parts.append(f"registry {chain['registry'] or '—'}{version}")
    if chain["rpc"]:
        parts.append(f"via {chain['rpc']}")
    text = ", ".join(parts)
    pinned = [f"chain id {chain['expected_chain_id']}" if chain["expected_chain_id"] is not None else "",
              f"registry {chain['expected_registry']}" if chain["expected_registry"] else ""]
    if any(pinned):
        text += "; the auditor required " + " and ".join(p for p in pinned if p)
    return text + "."


def warnings(report: dict[str, Any]) -> list[str]:
    """The report's warnings, with the development-chain warning added when the verifier did not word it."""
    items = list(report["warnings"])
    label = report["chain"]["dev_chain"]
    if label and not any("development chain" in w for w in items):
        items.insert(0, DEV_CHAIN_WARNING.format(label=label))
    return items


def not_checked(report: dict[str, Any]) -> list[str]:
    """What was not established, without repeating the not-run checks the Checks list already explains."""
    said = {f"{c['id']}: {c['summary']}" for c in report["checks"] if c["status"] == "not_run"}
    said |= {c["summary"] for c in report["checks"] if c["status"] == "not_run"}
    return [item for item in report["not_checked"] if item not in said]


def other_claims(report: dict[str, Any]) -> list[str]:
    out = []
    for c in report["claims"]:
        if c["selected"]:
            continue
        text = (f"also claimed by run {short(c['run_id'], 6)} (owner {short(c['owner'], 6)}), checkpoint "
                f"{c['index']} at block {c['block']} ({c['match']} match)")
        out.append(text + (f": {c['note']}" if c["note"] else ""))
    return out


@dataclass(frozen=True)
class CheckRow:
    """One line of the Checks list: a single check, or the not-run checks that share one reason."""

    status: str
    checks: tuple[dict[str, Any], ...]
    reason: str

    @property
    def grouped(self) -> bool:
        return len(self.checks) > 1

    @property
    def heading(self) -> str:
        return f"{len(self.checks)} checks not run: {self.reason}" if self.grouped else self.checks[0]["title"]


_NOT_RUN_PREFIX = re.compile(r"^(not run|not checked|skipped)\s*[:—-]\s*", re.I)


def _reason(check: dict[str, Any]) -> str:
    return _NOT_RUN_PREFIX.sub("", check["summary"]).rstrip(".") or "(no reason given)"


def check_rows(report: dict[str, Any]) -> list[CheckRow]:
    """The checks in order, each once; not-run checks with the same reason become one row where the first was."""
    reasons = Counter(_reason(c) for c in report["checks"] if c["status"] in ("not_run", "skipped"))
    rows: list[CheckRow] = []
    groups: dict[str, int] = {}
    for c in report["checks"]:
        reason = _reason(c)
        if c["status"] in ("not_run", "skipped") and reasons[reason] > 1:
            if reason in groups:
                row = rows[groups[reason]]
                rows[groups[reason]] = CheckRow(row.status, (*row.checks, c), reason)
                continue
            groups[reason] = len(rows)
        rows.append(CheckRow(c["status"], (c,), reason))
    return rows
