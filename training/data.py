"""Training data as the model sees it: tokenization and batches exactly as fed (loading the examples and the
salted dataset root they commit to live in `provenance.dataset`, which needs no torch).

Batches: each example is tokenized once with the model's tokenizer (special tokens added as the tokenizer does),
truncated and right-padded to `max_length`. A batch is three int64 arrays of shape (n, max_length):
`input_ids`, `attention_mask`, and `labels` (= input_ids, with -100 where attention_mask is 0). An empty Poisson
batch has shape (0, max_length). These are the arrays hashed into the batch digest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from provenance.errors import FormatError, UsageError

DEMO_DATA = Path(__file__).parent / "data" / "demo.jsonl"
IGNORE_INDEX = -100
TENSOR_NAMES = ("attention_mask", "input_ids", "labels")

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class TokenizedDataset:
    """Every example tokenized once: int64 arrays of shape (N, max_length)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    max_length: int

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def batch(self, indices: Sequence[int]) -> Batch:
        """The tensors fed for these dataset indices (shape (0, max_length) when empty)."""
        idx = np.asarray(list(indices), dtype=np.int64)
        input_ids = np.ascontiguousarray(self.input_ids[idx])
        attention_mask = np.ascontiguousarray(self.attention_mask[idx])
        labels = np.where(attention_mask == 1, input_ids, IGNORE_INDEX).astype(np.int64)
        return {"attention_mask": attention_mask, "input_ids": input_ids, "labels": labels}


def tokenize(examples: Sequence[str], tokenizer: Any, *, max_length: int) -> TokenizedDataset:
    """Tokenize with the model's tokenizer: truncate and right-pad to `max_length` (pad = eos if unset)."""
    if getattr(tokenizer, "pad_token_id", None) is None:
        if getattr(tokenizer, "eos_token", None) is None:
            raise UsageError("the tokenizer has neither a pad nor an eos token; cannot pad batches")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    encoded = tokenizer(
        list(examples), truncation=True, max_length=max_length, padding="max_length", return_tensors="np"
    )
    input_ids = np.ascontiguousarray(encoded["input_ids"], dtype=np.int64)
    attention_mask = np.ascontiguousarray(encoded["attention_mask"], dtype=np.int64)
    if input_ids.shape != (len(examples), max_length):
        raise FormatError(f"tokenizer returned shape {input_ids.shape}, expected {(len(examples), max_length)}")
    return TokenizedDataset(input_ids, attention_mask, max_length)
