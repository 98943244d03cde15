"""Batches exactly as fed to the model, and the salted batch commitment (`prov.batch.v2`) of each step.

Tokenization (`tokenize_records`, the one function the trainer and the verifier call): each record is tokenized
once with the base model's tokenizer (any object with the Hugging Face tokenizer interface; nothing is imported
here, so the verifier needs `transformers` for the tokenizer but not torch), truncated and right-padded to
`max_length`. A batch is three int64 arrays of shape (n, max_length): `input_ids`, `attention_mask` and `labels`,
-100 wherever no loss is taken. Per kind of record (provenance.dataset):

- text: the tokenizer's encoding with its special tokens; labels = input ids where the attention mask is 1
  (`TokenizedDataset.labels` is None: unchanged from earlier runs, so their batch digests stay the same).
- prompt_completion: the prompt encoded with the tokenizer's special tokens (as it adds them to one sequence), then
  the completion encoded without, then EOS. Encoding the two apart keeps the boundary exact (BPE would otherwise
  merge across it); labels are -100 on the prompt tokens and the padding.
- chat: the messages rendered with the tokenizer's chat template (`apply_chat_template`; the template file is part
  of the base-model digest) and encoded without adding special tokens (templates write their own, as
  `apply_chat_template(tokenize=True)` does). Labels only on tokens that overlap an assistant turn. The turns are
  located by rendering prefixes: for an assistant message i, `render(messages[:i], add_generation_prompt=True)`
  ends where its turn starts and `render(messages[:i+1])` where it ends, so the turn is the text between (its
  content and what the template closes it with, e.g. EOS). This works with any template that renders a
  conversation's prefix as a prefix of the whole (checked; otherwise a one-line error), unlike
  `return_assistant_tokens_mask`, which needs `{% generation %}` markers most templates lack; on templates that
  have them the two agree (tested). Character spans become token labels through the fast tokenizer's offsets.
  A template that renders the current date (`strftime_now`) is not reproducible: the batch commitments of a
  replay on another day would differ.

An empty Poisson batch has shape (0, max_length). The verifier rebuilds batches with the same code the trainer
used, so batch commitments of every step can be checked without training.

Commitment (docs/formats.md, "Batch commitment"): per-example salted leaves (salt = HMAC(batch key, u64(step) ||
u64(index)), batch key derived from the dataset key), one RFC 6962 root per rank shard, and a root over the rank
leaves. Hiding without the dataset key; one example's presence in a step can be proven by opening only its leaf
(`example_opening` / `check_example_opening`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from provenance import canonical, merkle
from provenance.dataset import KIND_FIELDS, KINDS, Example, Records, example_record
from provenance.errors import FormatError, UsageError, one_line
from provenance.hashing import Digest

BATCH_FORMAT = "prov.batch.v2"
EXAMPLE_FORMAT = "prov.batch-example.v2"
IGNORE_INDEX = -100
TENSOR_NAMES = ("attention_mask", "input_ids", "labels")

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class TokenizedDataset:
    """Every example tokenized once: int64 arrays of shape (N, max_length); `labels` default to the input ids
    where the attention mask is 1 (-100 elsewhere)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    max_length: int
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def batch(self, indices: Sequence[int]) -> Batch:
        """The tensors fed for these dataset indices (shape (0, max_length) when empty)."""
        idx = np.asarray(list(indices), dtype=np.int64)
        input_ids = np.ascontiguousarray(self.input_ids[idx])
        attention_mask = np.ascontiguousarray(self.attention_mask[idx])
        if self.labels is not None:
            labels = np.ascontiguousarray(self.labels[idx])
        else:
            labels = np.where(attention_mask == 1, input_ids, IGNORE_INDEX).astype(np.int64)
        return {"attention_mask": attention_mask, "input_ids": input_ids, "labels": labels}


def tokenize(examples: Sequence[str], tokenizer: Any, *, max_length: int) -> TokenizedDataset:
    """Tokenize texts with the model's tokenizer: truncate and right-pad to `max_length` (pad = eos if unset)."""
    _prepare_padding(tokenizer)
    encoded = tokenizer(
        list(examples), truncation=True, max_length=max_length, padding="max_length", return_tensors="np"
    )
    input_ids = np.ascontiguousarray(encoded["input_ids"], dtype=np.int64)
    attention_mask = np.ascontiguousarray(encoded["attention_mask"], dtype=np.int64)
    if input_ids.shape != (len(examples), max_length):
        raise FormatError(f"tokenizer returned shape {input_ids.shape}, expected {(len(examples), max_length)}")
    return TokenizedDataset(input_ids, attention_mask, max_length)


def tokenize_records(records: Sequence[Example], tokenizer: Any, *, kind: str | None = None,
                     max_length: int) -> TokenizedDataset:
    """Tokenize a dataset of any kind (the module docstring says how); `kind` defaults to the records' own.

    `records` are texts or canonical records (`provenance.dataset.Records` or its items); each must be of `kind`.
    """
    projected = [example_record(r) for r in records]
    if kind is None:
        kind = records.kind if isinstance(records, Records) else _kind_of(projected[0]) if projected else "text"
    if kind not in KINDS:
        raise UsageError(f"unknown data kind {kind!r} (one of {', '.join(KINDS)})")
    for i, record in enumerate(projected):
        if _kind_of(record) != kind:
            raise FormatError(f"dataset example {i} is a {_kind_of(record)} record, not {kind}")
    if max_length < 1:
        raise UsageError(f"max_length must be >= 1, got {max_length}")
    if kind == "text":
        return tokenize([r["text"] for r in projected], tokenizer, max_length=max_length)
    pad_id = _prepare_padding(tokenizer)
    rows = (_prompt_completion_rows(projected, tokenizer) if kind == "prompt_completion"
            else [_chat_row(r["messages"], tokenizer, index=i) for i, r in enumerate(projected)])
    return _pack(rows, pad_id=pad_id, max_length=max_length)


def _kind_of(record: Mapping[str, Any]) -> str:
    return next(k for k in KINDS if set(KIND_FIELDS[k]) == set(record))


def _prepare_padding(tokenizer: Any) -> int:
    """Right padding with the pad token (the eos token when the tokenizer has none); its id."""
    if getattr(tokenizer, "pad_token_id", None) is None:
        if getattr(tokenizer, "eos_token", None) is None:
            raise UsageError("the tokenizer has neither a pad nor an eos token; cannot pad batches")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return int(tokenizer.pad_token_id)


# A row before padding: token ids and, per token, whether the loss is taken on it.
Row = tuple[list[int], list[bool]]


def _prompt_completion_rows(records: Sequence[Mapping[str, Any]], tokenizer: Any) -> list[Row]:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise UsageError("the tokenizer has no eos token; prompt/completion data needs one to end each completion")
    prompts = tokenizer([r["prompt"] for r in records])["input_ids"]
    completions = tokenizer([r["completion"] for r in records], add_special_tokens=False)["input_ids"]
    return [([*p, *c, int(eos)], [False] * len(p) + [True] * (len(c) + 1)) for p, c in zip(prompts, completions,
                                                                                          strict=True)]


def render_chat(messages: Sequence[Mapping[str, str]], tokenizer: Any, *, index: int = 0) -> tuple[str, list[
        tuple[int, int]]]:
    """The conversation rendered with the tokenizer's chat template, and the character spans of its assistant
    turns (found by rendering prefixes; see the module docstring)."""
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError("the base model's tokenizer has no chat template; chat data needs one "
                         "(tokenizer_config.json `chat_template` or chat_template.jinja)")
    conversation = [{"content": m["content"], "role": m["role"]} for m in messages]
    full = _render(tokenizer, conversation, generation_prompt=False, index=index)
    spans = []
    for i, message in enumerate(conversation):
        if message["role"] != "assistant":
            continue
        if i == 0:  # Hugging Face refuses to render the empty conversation before it
            raise FormatError(f"dataset example {index}: the conversation starts with an assistant message; start it "
                              "with a system or user message")
        before = _render(tokenizer, conversation[:i], generation_prompt=True, index=index)
        through = _render(tokenizer, conversation[:i + 1], generation_prompt=False, index=index)
        if not (through.startswith(before) and full.startswith(through)):
            raise FormatError(f"dataset example {index}: the chat template does not render message {i} as a prefix "
                              "of the conversation, so its assistant tokens cannot be located")
        spans.append((len(before), len(through)))
    return full, spans


def _render(tokenizer: Any, conversation: list[dict[str, str]], *, generation_prompt: bool, index: int) -> str:
    try:
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as exc:  # jinja2 TemplateError, or raise_exception() in the template itself
        detail = one_line(exc, 200)
        raise FormatError(f"dataset example {index}: the chat template failed: {detail}") from None
    if not isinstance(text, str):
        raise FormatError(f"dataset example {index}: the chat template rendered {type(text).__name__}, not text")
    return text


def _chat_row(messages: Sequence[Mapping[str, str]], tokenizer: Any, *, index: int) -> Row:
    text, spans = render_chat(messages, tokenizer, index=index)
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:
        raise UsageError("chat data needs a fast tokenizer (tokenizer.json) for token offsets") from None
    ids = [int(t) for t in encoded["input_ids"]]
    # A token is trained on when its characters overlap an assistant span (an empty offset counts at its start).
    trained = [any(s < end and max(e, s + 1) > start for start, end in spans) for s, e in encoded["offset_mapping"]]
    return ids, trained


def _pack(rows: Sequence[Row], *, pad_id: int, max_length: int) -> TokenizedDataset:
    """Truncate and right-pad rows to `max_length`; labels = ids where trained, -100 elsewhere."""
    n = len(rows)
    input_ids = np.full((n, max_length), pad_id, dtype=np.int64)
    attention_mask = np.zeros((n, max_length), dtype=np.int64)
    labels = np.full((n, max_length), IGNORE_INDEX, dtype=np.int64)
    for i, (ids, trained) in enumerate(rows):
        length = min(len(ids), max_length)
        row = np.asarray(ids[:length], dtype=np.int64)
        input_ids[i, :length] = row
        attention_mask[i, :length] = 1
        labels[i, :length] = np.where(np.asarray(trained[:length], dtype=bool), row, IGNORE_INDEX)
    return TokenizedDataset(input_ids, attention_mask, max_length, labels)


# --- the commitment -------------------------------------------------------------------------------------------


MAX_WORLD_SIZE = 4096  # processes of one data-parallel run (the trainer's limit; the verifier fails more)


def shard_bounds(count: int, world_size: int) -> list[tuple[int, int]]:
    """Positions `[start, end)` of each rank's shard of a sorted logical batch of `count` examples."""
    if world_size < 1:
        raise UsageError(f"world size must be >= 1, got {world_size}")
    return [(r * count // world_size, (r + 1) * count // world_size) for r in range(world_size)]


def example_bytes(*, step: int, index: int, row: Mapping[str, np.ndarray]) -> bytes:
    """The canonical bytes of one example as fed at `step`: its three int64 rows of shape (1, max_length), in the
    layout `provenance.records.encode_safetensors` writes (tests compare the two). Only the step and index differ
    between examples of one run, so the rest of the header is built once per row length: the every-step pass
    hashes tens of thousands of examples."""
    rows = [np.ascontiguousarray(np.asarray(row[name]).reshape(-1), dtype="<i8") for name in TENSOR_NAMES]
    length = rows[0].shape[0]
    if any(r.shape[0] != length for r in rows):
        raise FormatError(f"step {step}, example {index}: its tensors have different lengths")
    head = f'{{"__metadata__":{{"format":"{EXAMPLE_FORMAT}","index":"{int(index)}","step":"{int(step)}"}},'
    head += _tensor_header(length)
    raw = head.encode("ascii")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(r.tobytes() for r in rows)


@functools.lru_cache(maxsize=16)
def _tensor_header(length: int) -> str:
    """The tensors' part of an example's canonical safetensors header (everything after `__metadata__`)."""
    entries: dict[str, Any] = {}
    offset = 0
    for name in TENSOR_NAMES:  # already in sorted order, as the canonical header lists them
        entries[name] = {"data_offsets": [offset, offset + 8 * length], "dtype": "I64", "shape": [1, length]}
        offset += 8 * length
    return canonical.encode(entries).decode("ascii")[1:]


def example_salt(batch_key: bytes, *, step: int, index: int) -> bytes:
    return hmac.new(batch_key, step.to_bytes(8, "big") + index.to_bytes(8, "big"), hashlib.sha256).digest()


def example_leaf(batch_key: bytes, *, step: int, index: int, row: Mapping[str, np.ndarray]) -> bytes:
    """`leaf(salt || example bytes)`: the leaf of example `index` in step `step`'s batch."""
    return merkle.hash_leaf(example_salt(batch_key, step=step, index=index)
                            + example_bytes(step=step, index=index, row=row))


def rank_leaf(*, rank: int, examples: int, root: bytes) -> bytes:
    return merkle.hash_leaf(canonical.encode({"examples": examples, "rank": rank, "root": root.hex()}))


def batch_digest_of_rank_leaves(*, step: int, rank_leaves: Sequence[bytes]) -> Digest:
    return Digest.of(canonical.encode({"format": BATCH_FORMAT, "ranks": len(rank_leaves),
                                       "root": merkle.root(list(rank_leaves)).hex(), "step": step}))


@dataclass(frozen=True)
class BatchCommitment:
    """A step's batch commitment with the intermediate values a proof needs."""

    step: int
    indices: tuple[int, ...]
    example_leaves: tuple[bytes, ...]  # in batch order
    rank_roots: tuple[bytes, ...]
    rank_leaves: tuple[bytes, ...]
    digest: Digest


def _rows(tensors: Mapping[str, np.ndarray], position: int) -> dict[str, np.ndarray]:
    return {name: np.asarray(tensors[name])[position] for name in TENSOR_NAMES}


def commit_batch(batch_key: bytes, *, step: int, indices: Sequence[int], tensors: Mapping[str, np.ndarray],
                 world_size: int = 1) -> BatchCommitment:
    """The `prov.batch.v2` commitment of step `step`'s logical batch (`indices` sorted, `tensors` row-aligned)."""
    order = [int(i) for i in indices]
    if order != sorted(order) or len(set(order)) != len(order):
        raise FormatError(f"step {step}: batch indices must be sorted and distinct")
    for name in TENSOR_NAMES:
        if name not in tensors or np.asarray(tensors[name]).shape[0] != len(order):
            raise FormatError(f"step {step}: batch tensor {name!r} missing or not one row per example")
    leaves = [example_leaf(batch_key, step=step, index=i, row=_rows(tensors, p)) for p, i in enumerate(order)]
    roots, rank_leaves = [], []
    for rank, (start, end) in enumerate(shard_bounds(len(order), world_size)):
        root = merkle.root(leaves[start:end])
        roots.append(root)
        rank_leaves.append(rank_leaf(rank=rank, examples=end - start, root=root))
    digest = batch_digest_of_rank_leaves(step=step, rank_leaves=rank_leaves)
    return BatchCommitment(step, tuple(order), tuple(leaves), tuple(roots), tuple(rank_leaves), digest)


def batch_digest(batch_key: bytes, *, step: int, indices: Sequence[int], tensors: Mapping[str, np.ndarray],
                 world_size: int = 1) -> Digest:
    """The digest a `prov.step.v2` record's `batch` field holds."""
    return commit_batch(batch_key, step=step, indices=indices, tensors=tensors, world_size=world_size).digest
