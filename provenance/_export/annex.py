"""EU AI Act (Regulation (EU) 2024/1689) Annex IV technical documentation: the fields of point 2 a verified run can
prove, each with the value and where it comes from, and the fields a person must still write.

Built from a publishable verify report (prov.verify-report.v2) and, when the caller has it, the run manifest the
report verified (its digest is on chain, so every value read from it is what the trainer committed before the first
step). Without the manifest, the fields only it holds say where to find them. docs/compliance.md explains each
field, its source and what it does not prove.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from provenance import _report_words as words

ANNEX_FORMAT = "prov.annex-iv.v1"
PROVIDER = "to be completed by the provider"


@dataclass(frozen=True)
class Entry:
    """One documented fact: what it is, its value, and where the value comes from."""

    label: str
    value: str
    source: str


@dataclass(frozen=True)
class Point:
    """One Annex IV point (`2(a)`), with the facts the run proves for it."""

    ref: str
    title: str
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class Todo:
    """A field of Annex IV no training record can fill: a person must write it."""

    ref: str
    title: str
    what: str


@dataclass(frozen=True)
class AnnexIV:
    subject: str
    weights_digest: str | None
    level: str
    generated_at: str
    prov_version: str
    points: tuple[Point, ...]
    todo: tuple[Todo, ...]

    def to_json(self) -> dict[str, Any]:
        return {"format": ANNEX_FORMAT, **asdict(self)}


TODO = (
    Todo("1(a)", "Intended purpose, provider, date and version of the system", PROVIDER),
    Todo("1(b)–(h)", "Interaction with other hardware and software, software versions and update requirements, "
         "forms placed on the market, target hardware, user interface, instructions for use", PROVIDER),
    Todo("2(b)", "Rationale and assumptions of the design choices, the persons or groups the system is meant for, "
         "expected output and its quality, trade-offs made to meet Chapter III, Section 2", PROVIDER),
    Todo("2(c)", "How the adapter is integrated into the overall system (serving, other components)", PROVIDER),
    Todo("2(d)", "What the training data is: content, scope and main characteristics, how it was obtained and "
         "selected, labelling and cleaning (the run proves which data was used, by commitment, not what it "
         "contains)",
         PROVIDER),
    Todo("2(e)", "Human oversight measures (Article 14) and how deployers interpret the outputs", PROVIDER),
    Todo("2(f)", "Pre-determined changes to the system and its performance", PROVIDER),
    Todo("2(g)", "Validation and testing data, accuracy and robustness metrics, potentially discriminatory "
         "impacts, dated and signed test logs (beyond the privacy and provenance checks above)", PROVIDER),
    Todo("2(h)", "Cybersecurity of the deployed system (beyond the integrity of the training record)", PROVIDER),
    Todo("3", "Monitoring, functioning and control: capabilities and limitations in performance, foreseeable "
         "unintended outcomes and risks, input data specifications", PROVIDER),
    Todo("4", "Why the performance metrics are appropriate for this system", PROVIDER),
    Todo("5", "The risk management system (Article 9)", PROVIDER),
    Todo("6", "Relevant changes made to the system through its lifecycle", PROVIDER),
    Todo("7", "Harmonised standards or common specifications applied", PROVIDER),
    Todo("8", "A copy of the EU declaration of conformity (Article 47)", PROVIDER),
    Todo("9", "The post-market monitoring system and plan (Article 72)", PROVIDER),
)

_MANIFEST = "run manifest (its digest is registered on chain)"


def _dig(doc: dict[str, Any] | None, *keys: str) -> Any:
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def _pairs(value: Any) -> str | None:
    if not isinstance(value, dict) or not value:
        return None
    return ", ".join(f"{k} {words.num(v) if not isinstance(v, list) else ', '.join(map(str, v))}"
                     for k, v in sorted(value.items()) if v is not None and not isinstance(v, dict))


class _Builder:
    """Collects entries; `from_manifest` says where to look when the manifest was not given."""

    def __init__(self, report: dict[str, Any], manifest: dict[str, Any] | None) -> None:
        self.report, self.manifest = report, manifest
        cid = (report["run"] or {}).get("manifest_cid")
        self.missing = (f"recorded in the run manifest (CID {cid}), which was not read for this document: give "
                        "`prov export annex-iv` --run-manifest or --store to fill it in") if cid else "not recorded"

    def check(self, check_id: str) -> str:
        found = next((c for c in self.report["checks"] if c["id"] == check_id), None)
        if found is None:
            return "not run"
        return f"{words.STATUS_WORDS[found['status']].lower()}: {found['summary']}"

    def from_manifest(self, label: str, render: Callable[[dict[str, Any]], str | None]) -> Entry:
        if self.manifest is None:
            return Entry(label, self.missing, _MANIFEST)
        return Entry(label, render(self.manifest) or "not recorded in the run manifest", _MANIFEST)


def _development(b: _Builder) -> Point:
    report, run, dp = b.report, b.report["run"], b.report["dp"]
    private = dp is not None and dp["mode"] == "dp"
    method = ("Fine-tuning of a pre-trained causal language model with a LoRA adapter, trained with differentially "
              "private SGD (Poisson sampling, per-example gradient clipping, Gaussian noise)" if private else
              "Fine-tuning of a pre-trained causal language model with a LoRA adapter, without differential privacy")
    if report["subject"]["kind"] == "merged":
        method += "; shipped merged into the base model"
    base = run["base_model"]
    lineage = report["lineage"]
    blocks = f" (blocks {lineage[0]['block']}–{lineage[-1]['block']})" if lineage else ""
    final = (f"; the run was finalised in block {run['finalized']['block']}" if run["finalized"] else
             "; the run is not finalised")
    return Point("2(a)", "Methods and steps of development, including the use of a pre-trained system", (
        Entry("Development method", method, "run manifest, training.dp.mode; verify report dp.mode"),
        Entry("Pre-trained base model", f"{base['name'] or 'unnamed'}, identified by digest {base['digest']} "
              "(weights, configuration and tokenizer); the name is the trainer's label, the digest is what is "
              "committed", "registration on chain (base-model digest), run manifest (name)"),
        Entry("Base model compared", b.check("base_model"), "verify report, check base_model"),
        Entry("Training run", f"run {run['run_id']} (key {run['run_key']}), registered by {run['owner']} in block "
              f"{run['register_block']} ({words.when(run['register_time'])}) before its first step",
              "registry event RunRegistered"),
        Entry("Development steps recorded", f"{report['dp']['steps'] if report['dp'] else '—'} optimizer steps up "
              f"to this checkpoint, {len(lineage)} checkpoints committed on chain{blocks}, every step recorded in "
              f"an append-only Merkle log before the next began{final}",
              "registry events; verify report checks history and step_log"),
        Entry("Starting point (checkpoint 0)", b.check("checkpoint_zero"), "verify report, check checkpoint_zero"),
    ))


def _design(b: _Builder) -> Point:
    dp = b.report["dp"]

    def lora(m: dict[str, Any]) -> str | None:
        value = _dig(m, "training", "lora")
        return None if not value else (f"rank {value.get('r')}, alpha {value.get('alpha')}, dropout "
                                       f"{words.num(value.get('dropout'))}, on modules "
                                       + ", ".join(map(str, value.get("target_modules") or [])))

    def batching(m: dict[str, Any]) -> str | None:
        t = _dig(m, "training") or {}
        expected = _dig(t, "batch", "expected_batch_size") or t.get("expected_batch_size")
        return (f"Poisson sampling, expected batch size {words.num(expected)} (sample rate "
                f"{words.num(dp and dp['sample_rate'])}), {words.num(t.get('steps'))} steps planned, a checkpoint "
                f"every {words.num(t.get('checkpoint_every'))} steps")

    privacy = ("not differentially private" if dp is None or dp["mode"] != "dp" else
               f"noise multiplier {words.num(dp['noise_multiplier'])}, clipping norm {words.num(dp['max_grad_norm'])}, "
               f"δ {words.num(dp['delta'])}, {str(dp['accountant']).upper()} accountant, ε budget "
               f"{words.num(dp['epsilon_budget'])}")
    return Point("2(b)", "Design specifications: optimisation and hyperparameters", (
        b.from_manifest("Training objective", lambda m: _dig(m, "training", "loss")),
        b.from_manifest("Optimizer", lambda m: _pairs(_dig(m, "training", "optimizer"))),
        b.from_manifest("Learning-rate schedule", lambda m: _pairs(_dig(m, "training", "schedule"))),
        b.from_manifest("LoRA adapter", lora),
        b.from_manifest("Batching and length of training", batching),
        Entry("Differential-privacy parameters", privacy, "run manifest, training.dp; verify report dp"),
    ))


def _resources(b: _Builder) -> Point:
    report = b.report
    recorded = _dig(report["replay"], "environment", "recorded")

    def determinism(m: dict[str, Any]) -> str | None:
        d = _dig(m, "determinism") or recorded or {}
        parts = [f"{k} {words.num(d.get(k))}" for k in ("profile", "cpu_capability", "threads", "machine")
                 if d.get(k) is not None]
        return "; ".join(parts) or None

    def compute(m: dict[str, Any]) -> str | None:
        d, t = _dig(m, "determinism") or {}, _dig(m, "training") or {}
        return (f"{words.num(t.get('steps'))} optimizer steps on {d.get('device') or 'cpu'}, "
                f"{t.get('world_size') or 1} process(es), precision {d.get('dtype') or 'float32'}")

    run = report["run"]
    return Point("2(c)", "Architecture and computational resources", (
        Entry("Architecture", f"a LoRA adapter over the base model {run['base_model']['name'] or 'unnamed'}, "
              f"delivered as {report['subject']['path']} ({report['subject']['kind']})",
              "verify report subject and run"),
        b.from_manifest("Computational resources", compute),
        b.from_manifest("Determinism profile (what bitwise replay needs)", determinism),
        b.from_manifest("Software", lambda m: _pairs(_dig(m, "software", "versions"))),
    ))


def _data(b: _Builder) -> Point:
    run, formats = b.report["run"], b.report["run"]["formats"]

    def salting(m: dict[str, Any]) -> str | None:
        key = _dig(m, "secrets", "dataset_key_commitment")
        return None if key is None else (
            "each leaf is salted with an HMAC of a secret dataset key (commitment " + str(key) + "), so a record "
            "cannot be confirmed by guessing it; batch digests are salted the same way")

    def preparation(m: dict[str, Any]) -> str | None:
        length = _dig(m, "dataset", "max_length")
        return (f"tokenized with the base model's tokenizer (covered by the base-model digest), at most "
                f"{words.num(length)} tokens per example; batches committed as {formats.get('batch') or '—'}")

    return Point("2(d)", "Data requirements: provenance and preparation of the training data", (
        Entry("Dataset commitment", f"RFC 6962 Merkle root {run['dataset_root']} over "
              f"{words.num(run['examples'])} examples, registered before training",
              "registration on chain (dataset root); run manifest (size)"),
        Entry("How a record is proven included", "an inclusion proof (the record, its salt and the Merkle path to "
              "the root) shows that one record was in the set without revealing any other; that a record was "
              "*not* used cannot be proven this way", "the dataset commitment scheme (docs/formats.md)"),
        b.from_manifest("Salting", salting),
        b.from_manifest("Data preparation", preparation),
        Entry("Data checked by the auditor", b.check("dataset"), "verify report, check dataset"),
        Entry("Every step's batch recomputed", b.check("steps"), "verify report, check steps"),
    ))


def _validation(b: _Builder) -> Point:
    report = b.report
    entries = [Entry("Privacy guarantee", words.privacy_sentence(report["dp"]), "verify report dp"),
               Entry("ε recomputed", b.check("privacy"), "verify report, check privacy (ε for every checkpoint)"),
               Entry("Verification", f"{report['level']['text']} on {words.when(report['generated_at'])} by prov "
                     f"{report['prov_version']}; {words.counts(report)}", "verify report level and checks")]
    sampled = words.replay_sentence(report)
    if sampled:
        entries.append(Entry("Training re-run bit for bit", f"{sampled}; {b.check('replay')}",
                             "verify report replay"))
    valid = [a for a in report["attestations"] or [] if a["valid"] and not a["revoked"]]
    if valid:
        entries.append(Entry("Independent auditors", f"{len(valid)} valid attestation(s) anchored on chain",
                             "AttestationRegistry events"))
    return Point("2(g)", "Validation and testing procedures: privacy and provenance", tuple(entries))


def _security(b: _Builder) -> Point:
    report, chain = b.report, b.report["chain"]
    dev = (f"; {chain['dev_chain']} is a local development chain: its timestamps and block hashes are controlled "
           "by whoever runs it" if chain["dev_chain"] else "")
    subject = next((c for c in report["lineage"] if c["is_subject"]), None)
    cids = f"run manifest {report['run']['manifest_cid']}" + (
        f", this checkpoint {subject['manifest_cid']}" if subject else "")
    return Point("2(h)", "Cybersecurity measures protecting the training record", (
        Entry("Append-only training log", "every optimizer step is a leaf of an RFC 6962 Merkle tree; each "
              "checkpoint commits the tree's size and root, and consecutive roots are linked by consistency proofs, "
              "so history cannot be rewritten after anchoring. " + b.check("step_log"),
              "verify report, check step_log"),
        Entry("Content addressing", f"manifests, logs and checkpoints are stored by IPFS CIDv1 and re-hashed "
              f"when fetched: {cids}", "verify report run and lineage"),
        Entry("On-chain anchoring", words.chain_sentence(chain).rstrip(".") + dev + "; the registry cannot be "
              "upgraded and nothing in it can be rewritten or deleted", "verify report chain; check chain"),
        Entry("Who could write", b.check("committers"), "verify report, check committers"),
        Entry("Verifier's result", report["level"]["text"], "verify report level"),
    ))


def build(report: dict[str, Any], manifest: dict[str, Any] | None = None) -> AnnexIV:
    """The Annex IV document of a verified report (a prepared v2 dict with a run)."""
    b = _Builder(report, manifest)
    points = (_development(b), _design(b), _resources(b), _data(b), _validation(b), _security(b))
    return AnnexIV(subject=report["subject"]["path"], weights_digest=report["subject"]["weights_digest"],
                   level=report["level"]["text"], generated_at=report["generated_at"],
                   prov_version=report["prov_version"], points=points, todo=TODO)
