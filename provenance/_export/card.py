"""The provenance section of a Hugging Face model card: `README.md` YAML front matter (the Hub's model card metadata
plus a `prov:` block) and a Markdown section a reader can act on, ending with the command that re-checks it.

The YAML is written by hand (no PyYAML at run time) in block style with every string as a JSON-quoted scalar, which
YAML reads back exactly, so no value from a report (the base model's name comes from a manifest) can add keys or
break out of the front matter.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from provenance import _report_words as words
from provenance._export.render import md
from provenance.canonical import escape_controls

CARD_FORMAT = "prov.model-card.v1"
# A Hub repository id `owner/name`: only such a base model name goes in `base_model:` (a local path never does).
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+")


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for a JSON-like value (dicts, lists, strings, numbers, booleans, null)."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return f"{pad}{{}}\n"
        out = ""
        for key, item in value.items():
            head = f"{pad}{json.dumps(str(key)) if not re.fullmatch(r'[a-z_][a-z0-9_]*', key) else key}:"
            out += (f"{head}\n{to_yaml(item, indent + 2)}" if isinstance(item, dict | list) and item
                    else f"{head} {_scalar(item)}\n")
        return out
    if isinstance(value, list):
        if not value:
            return f"{pad}[]\n"
        return "".join(f"{pad}- {_scalar(item)}\n" if not isinstance(item, dict | list) else
                       f"{pad}-\n{to_yaml(item, indent + 2)}" for item in value)
    return f"{pad}{_scalar(value)}\n"


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):  # YAML 1.1 readers (PyYAML) need a dot to see `1e-05` as a number
        text = repr(value)
        return text.replace("e", ".0e", 1) if "e" in text and "." not in text else text
    if isinstance(value, dict | list):
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(str(value), ensure_ascii=True)


def verify_command(report: dict[str, Any]) -> str:
    """The `prov verify` command that re-checks this file against the same chain and registry."""
    chain, run = report["chain"], report["run"]
    rpc = chain["rpc"] if chain["rpc"] and "://" in chain["rpc"] else "RPC_URL"
    parts = ["prov", "verify", report["subject"]["path"], "--rpc", rpc, "--registry", chain["registry"] or "",
             "--expect-chain-id", str(chain["chain_id"]), "--expect-registry", chain["registry"] or ""]
    if run is not None:
        parts += ["--run", run["run_id"]]
    return " ".join(shlex.quote(p) if p != "RPC_URL" else p for p in parts)


def _code(value: Any) -> str:
    """An inline code span that no value can close early."""
    return "`" + escape_controls(" ".join(str(value).replace("`", "'").split())) + "`"  # no bidi/controls (#22)


def _fence(text: str) -> str:
    """A fence longer than any backtick run in `text`."""
    return "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))


def _subject(report: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in report["lineage"] if c["is_subject"]), None)


def front_matter(report: dict[str, Any], *, datasets: list[str] | None = None) -> dict[str, Any]:
    """The card's metadata: the Hub's fields and the `prov:` block. `datasets`: the training data's Hub ids, only
    where the data is public (the run commits the data by a salted root, never by name)."""
    run, dp, chain, subject = report["run"], report["dp"], report["chain"], report["subject"]
    checkpoint = _subject(report)
    private = dp is not None and dp["mode"] == "dp"
    meta: dict[str, Any] = {}
    name = run["base_model"]["name"]
    if name and _HUB_ID.fullmatch(name):
        meta["base_model"] = name
        # The Hub's relation: a LoRA adapter is an `adapter` of its base model; a merged model a `merge` of it.
        meta["base_model_relation"] = "merge" if subject["kind"] == "merged" else "adapter"
    if datasets:
        meta["datasets"] = [d for d in datasets if _HUB_ID.fullmatch(d)]
    meta |= {"library_name": "peft", "pipeline_tag": "text-generation",
             "tags": ["prov", "training-provenance", "lora", "peft"]
             + (["differential-privacy", "dp-sgd"] if private else [])}
    meta["prov"] = {
        "format": CARD_FORMAT, "verdict": report["verdict"], "level": report["level"]["name"],
        "verdict_line": report["level"]["text"], "verified_at": report["generated_at"],
        "prov_version": report["prov_version"], "chain_id": chain["chain_id"], "genesis_hash": chain["genesis_hash"],
        "dev_chain": chain["dev_chain"], "registry": chain["registry"], "registry_version": chain["registry_version"],
        "run_id": run["run_id"], "run_key": run["run_key"], "owner": run["owner"],
        "checkpoint": None if checkpoint is None else checkpoint["index"],
        "weights_digest": subject["weights_digest"], "tensor_digest": subject["tensor_digest"],
        "checkpoint_digest": None if checkpoint is None else checkpoint["checkpoint_digest"],
        "run_manifest_cid": run["manifest_cid"],
        "checkpoint_cid": None if checkpoint is None else checkpoint["manifest_cid"],
        "base_model_name": name, "base_model_digest": run["base_model"]["digest"],
        "dataset_root": run["dataset_root"], "examples": run["examples"],
        "dp": {"mode": "non-private"} if not private else {
            "epsilon": dp["epsilon_recomputed"] if dp["epsilon_recomputed"] is not None else dp["epsilon_committed"],
            "delta": dp["delta"], "accountant": dp["accountant"], "noise_multiplier": dp["noise_multiplier"],
            "max_grad_norm": dp["max_grad_norm"], "sample_rate": dp["sample_rate"], "steps": dp["steps"]},
        "verify": verify_command(report),
    }
    return meta


def _dp_words(dp: dict[str, Any] | None) -> str:
    if dp is None or dp["mode"] != "dp":
        return "This adapter was trained **without** differential privacy."
    eps = dp["epsilon_recomputed"] if dp["epsilon_recomputed"] is not None else dp["epsilon_committed"]
    return (f"Trained with DP-SGD: for any single training example, the distribution of the released adapter "
            f"changes by at most a factor e^{md(words.num(eps))} (plus a probability {md(words.num(dp['delta']))}) "
            "whether or not that example was in the training set. In plain words: the adapter reveals very little "
            f"about any one record. {md(words.privacy_sentence(dp))}")


def card(report: dict[str, Any], *, datasets: list[str] | None = None) -> str:
    """README.md text: front matter and the provenance section (the caller adds the rest of the card)."""
    run, chain, dp = report["run"], report["chain"], report["dp"]
    checkpoint = _subject(report)
    rows = [
        ("Verification", f"**{md(report['level']['text'])}** ({md(words.when(report['generated_at']))}, prov "
                         f"{md(report['prov_version'])})"),
        ("Base model", f"{md(run['base_model']['name'] or 'unnamed')}, digest {_code(run['base_model']['digest'])}"),
        ("Dataset commitment", f"{_code(run['dataset_root'])} ({md(words.num(run['examples']))} examples; a salted "
                               "RFC 6962 Merkle root: single records can be proven included)"),
        ("Chain", md(words.chain_sentence(chain))),
        ("Run", f"{_code(run['run_id'])} (key {_code(run['run_key'])}), owner {_code(run['owner'])}"),
        ("Checkpoint", "—" if checkpoint is None else f"{checkpoint['index']}, step {checkpoint['step']}, "
                       f"checkpoint CID {_code(checkpoint['manifest_cid'])}"),
        ("Run manifest", f"CID {_code(run['manifest_cid'])}, digest {_code(run['manifest_digest'])}"),
        ("Weights digest", _code(report["subject"]["weights_digest"])),
    ]
    meta = to_yaml(front_matter(report, datasets=datasets)).rstrip("\n")
    lines = ["---", meta, "---", "", "## Training provenance", "",
             "This model's training is recorded in a public, append-only log and anchored on chain with prov: "
             "which base model, which data (by commitment), which hyperparameters and privacy budget, and every "
             "training step.", "",
             "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), "",
             "### Differential privacy", "", _dp_words(dp), ""]
    warns = words.warnings(report)
    if warns:
        lines += ["### Warnings", "", *(f"- {md(w)}" for w in warns), ""]
    command = verify_command(report)
    lines += ["### Check it yourself", "", _fence(command) + "sh", command, _fence(command), "",
              "Auditors given the training data and the run's secrets can add `--data --secrets --base-model "
              "--replay all` to re-run training bit for bit.", ""]
    return "\n".join(lines)
