"""Everything a run publishes is public, so nothing in it may leak the training data (issue #13).

A real run is trained and anchored; then every byte it published — every block in the store (run manifest, every
checkpoint: adapter, optimizer state, state.json, step-log segment, manifest) and the publishable verify report —
is searched for what must never be there: any step's loss or clipped fraction (as text or as the float's bytes),
the unsalted batch digest a v1 run would have published (whole batch or per example), each step's exact example
count as a step record would carry it (issue #23: a published Poisson batch size is a channel the DP accountant does
not cover; prov.step.v3 keeps it in the statistics commitment), the text of any training record, and every secret
and key derived from the secrets."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="training a run needs the train extra (scripts/setup installs it)")

from provenance import batches
from provenance.basemodel import load_tokenizer
from provenance.dataset import load_committed
from provenance.hashing import Digest
from provenance.manifest import decode_run_manifest
from provenance.records import StepStats, batch_digest_v1
from provenance.report import publishable
from provenance.sampler import poisson_indices
from provenance.secrets import NOISE_LABEL, SAMPLE_LABEL, Secrets, step_key
from tests.fixtures.verify import VerifyEnv, data_options, last

pytestmark = pytest.mark.replay


def published_bytes(env: VerifyEnv) -> bytes:
    blocks = sorted(p for p in (env.tmp / "store" / "blocks").rglob("*") if p.is_file())
    assert len(blocks) > 10, "the run published nothing?"
    return b"\n".join(p.read_bytes() for p in blocks)


def forbidden(run: Path, model: Path) -> dict[str, list[bytes]]:
    """What must not appear, by kind, each as the byte strings it could take."""
    manifest = decode_run_manifest((run / "run.json").read_bytes())
    secrets = Secrets.load(run / "secrets.json")
    stats = [StepStats.from_json(json.loads(line)) for line in (run / "stats.jsonl").read_text().splitlines()]
    out: dict[str, list[bytes]] = {"statistics": [], "unsalted batch digests": [], "records": [], "secrets": [],
                                   "batch sizes": []}
    for item in stats:
        for value in (item.loss, item.clipped_fraction):
            if value not in (0.0, 1.0):  # 0.0 and 1.0 occur everywhere (e.g. "clipped_fraction" of empty batches)
                out["statistics"] += [repr(value).encode(), struct.pack("<d", value)]
    records = load_committed(Path(json.loads((run / "local.json").read_bytes())["data"]), manifest["dataset"])
    tokenized = batches.tokenize_records(records, load_tokenizer(model), kind=manifest["dataset"].get("kind", "text"),
                                         max_length=int(manifest["dataset"]["max_length"]))
    training = manifest["training"]
    for k in range(int(training["steps"])):
        chosen = poisson_indices(secrets.noise_seed, k, int(training["dataset_size"]),
                                 float(training["dp"]["sample_rate"]))
        tensors = tokenized.batch(chosen)
        # A count as any step record writes it (canonical JSON: no spaces), and as the first fields of a v2 record.
        out["batch sizes"] += [b'"examples":%d,"format":"prov.step' % len(chosen),
                               b'"examples":%d' % len(chosen) + b',"format"']
        out["unsalted batch digests"].append(batch_digest_v1(step=k, indices=chosen, tensors=tensors).hex.encode())
        for position, index in enumerate(chosen):
            row = {name: np.asarray(tensors[name])[position] for name in batches.TENSOR_NAMES}
            unsalted = batches.example_bytes(step=k, index=index, row=row)
            out["unsalted batch digests"].append(hashlib.sha256(b"\x00" + unsalted).hexdigest().encode())
            out["unsalted batch digests"].append(hashlib.sha256(unsalted).hexdigest().encode())
        for key in (step_key(secrets.noise_seed, NOISE_LABEL, k), step_key(secrets.noise_seed, SAMPLE_LABEL, k)):
            out["secrets"] += [key, key.hex().encode()]
    for record in records:
        text = json.dumps(dict(record), ensure_ascii=False, sort_keys=True)
        for value in dict(record).values():
            if isinstance(value, str) and len(value) >= 12:
                out["records"] += [value.encode(), json.dumps(value)[1:-1].encode()]
        out["records"].append(text.encode())
    for secret in (secrets.noise_seed, secrets.dataset_key, secrets.stats_key(), secrets.batch_key()):
        out["secrets"] += [secret, secret.hex().encode()]
    return out


def test_nothing_a_run_publishes_leaks_statistics_data_or_secrets(tiny_run: Any, tiny_model_dir: Path,
                                                                  tmp_path: Path) -> None:
    env = VerifyEnv(tmp_path)
    run = env.copy(tiny_run.run_dir)
    env.anchor(run)
    report = env.verify(last(run) / "adapter_model.safetensors", replay="0", **data_options(run, tiny_model_dir))
    assert report["verdict"] == "verified" and report["series"]["loss_status"] == "checked"
    public_report = json.dumps(publishable(report)).encode()
    haystack = published_bytes(env) + b"\n" + public_report
    needles = forbidden(run, tiny_model_dir)
    found = {kind: [needle[:40] for needle in items if needle in haystack] for kind, items in needles.items()}
    # The search would find them where they do live: the private statistics, the data, the secrets file.
    private = {"statistics": (run / "stats.jsonl").read_bytes(),
               "batch sizes": _as_v2_records(run),
               "records": Path(json.loads((run / "local.json").read_bytes())["data"]).read_bytes(),
               "secrets": (run / "secrets.json").read_bytes()}
    for kind, content in private.items():
        assert any(needle in content for needle in needles[kind]), kind
    assert found == {"statistics": [], "unsalted batch digests": [], "records": [], "secrets": [],
                     "batch sizes": []}
    # The auditor's full report does carry the loss curve it checked; only the publishable copy drops it.
    assert report["series"]["loss"] and publishable(report)["series"]["loss"] is None


def _as_v2_records(run: Path) -> bytes:
    """What the run's step log would have published as prov.step.v2 records (each with its count in clear), built
    from the private statistics: the scan must find the counts there, so its silence on the published bytes means
    something."""
    from provenance.records import StepRecord

    stats = [StepStats.from_json(json.loads(line)) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert all(item.examples is not None for item in stats), "a v3 run's statistics carry each step's count"
    return b"\n".join(StepRecord(step=s.step, batch=Digest.of(b"-"), examples=int(s.examples or 0), lr=0.001,
                                  noise_index=s.step, stats=Digest.of(b"-")).encode() for s in stats)

