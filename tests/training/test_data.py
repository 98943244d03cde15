"""Examples, the salted dataset root (against a naive reference), tokenization and batches."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import numpy as np
import pytest

from provenance import merkle
from provenance.dataset import dataset_root, example_leaf, load_examples
from provenance.errors import FormatError, UsageError
from training.data import DEMO_DATA

KEY = bytes(range(32))


def naive_root(texts: list[str], key: bytes) -> bytes:
    leaves = []
    for i, text in enumerate(texts):
        salt = hmac.new(key, b"example" + i.to_bytes(8, "big"), hashlib.sha256).digest()
        body = json.dumps({"text": text}, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        leaves.append(hashlib.sha256(b"\x00" + salt + body).digest())
    return merkle.root(leaves)


def test_dataset_root_matches_reference_and_depends_on_key_order_and_content() -> None:
    texts = ["alpha", "béta", "gamma \"quoted\"", "delta"]
    root = dataset_root(texts, KEY)
    assert root.value == naive_root(texts, KEY)
    assert dataset_root(texts, bytes(32)) != root
    assert dataset_root(list(reversed(texts)), KEY) != root
    assert dataset_root([*texts[:3], "delta!"], KEY) != root
    # a proof of one example against the root, as the verifier will do
    leaves = [example_leaf(KEY, i, t) for i, t in enumerate(texts)]
    proof = merkle.inclusion_proof(2, leaves)
    merkle.verify_inclusion(example_leaf(KEY, 2, texts[2]), 2, len(texts), proof, root.value)


def test_demo_dataset_loads() -> None:
    examples = load_examples(DEMO_DATA)
    assert len(examples) == 256 and all(isinstance(e, str) and e for e in examples)


def test_text_and_jsonl_formats(tmp_path: Path) -> None:
    text = tmp_path / "d.txt"
    text.write_text("first line\n\n  second line  \n")
    assert load_examples(text) == ["first line", "second line"]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"body": "x"}\n\n{"body": "y"}\n')
    assert load_examples(jsonl, text_field="body") == ["x", "y"]


def test_bad_datasets_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_examples(tmp_path / "none.jsonl")
    with pytest.raises(UsageError, match="must be a file"):
        load_examples(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{not json}\n')
    with pytest.raises(FormatError, match="line 2"):
        load_examples(bad)
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"other": "x"}\n')
    with pytest.raises(FormatError, match="'text'"):
        load_examples(missing)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(UsageError, match="no examples"):
        load_examples(empty)


def test_tokenized_batches_as_fed(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from provenance.batches import tokenize

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ds = tokenize(["a short one", "a much longer example " * 20], tok, max_length=16)
    batch = ds.batch([1, 0])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    for arr in batch.values():
        assert arr.dtype == np.int64 and arr.shape == (2, 16)
    short = batch["attention_mask"][1]
    assert short.sum() < 16  # padded
    assert (batch["labels"][1][short == 0] == -100).all()
    assert (batch["labels"][0] == batch["input_ids"][0]).all()  # truncated, no padding
    empty = ds.batch([])
    assert all(a.shape == (0, 16) and a.dtype == np.int64 for a in empty.values())
