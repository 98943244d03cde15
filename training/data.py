"""The bundled demo dataset, and the calls through which the trainer, resume and the replay worker read data.

Loading, tokenization and batches live in `provenance.dataset` and `provenance.batches` (no torch), so the verifier
rebuilds exactly what the trainer fed. Every trainer-side reader goes through these functions, so a change in how
data is read is made in one place: `records_for_config` (a new run: the config's `[data]` section),
`records_for_run` (resume, replay: as the run manifest says the data was read) and `tokenized_for`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from provenance.batches import TokenizedDataset, tokenize_records
from provenance.dataset import Records, load_committed, load_records
from training.config import TrainConfig

DEMO_DATA = Path(__file__).parent / "data" / "demo.jsonl"


def data_path(cfg: TrainConfig) -> Path:
    return Path(cfg.data.path) if cfg.data.path else DEMO_DATA


def records_for_config(cfg: TrainConfig) -> Records:
    """The records of a new run's data file, read as its config says."""
    return load_records(data_path(cfg), format=cfg.data.format, kind=cfg.data.kind, fields=cfg.data.fields())


def records_for_run(path: str | os.PathLike[str], manifest: Mapping[str, Any]) -> Records:
    """The records of `path` read as the run manifest says the run read its data (kind, fields, file format)."""
    data_format = str(manifest.get("config", {}).get("data", {}).get("format", "auto"))
    return load_committed(path, manifest["dataset"], format=data_format)


def max_length_of(manifest: Mapping[str, Any]) -> int:
    dataset = manifest.get("dataset", {})
    value = dataset.get("max_length", manifest.get("config", {}).get("data", {}).get("max_length"))
    return int(value)


def tokenized_for(records: Sequence[Any], tokenizer: Any, manifest: Mapping[str, Any]) -> TokenizedDataset:
    """Every example tokenized once with the model's tokenizer (kind and length as the manifest says)."""
    kind = manifest.get("dataset", {}).get("kind")
    return tokenize_records(records, tokenizer, kind=kind, max_length=max_length_of(manifest))
