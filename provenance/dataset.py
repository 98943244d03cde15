"""Training data as the run commits to it: loading records, the salted dataset root, and the manifest's summary.

No torch and no tokenizer: an auditor with only the verifier installed recomputes the dataset root from the data
and the dataset key. A dataset holds records of one *kind*:

    text               {"text": str}                                  loss on every token
    prompt_completion  {"prompt": str, "completion": str}             loss on the completion only
    chat               {"messages": [{"role": str, "content": str}]}  loss on the assistant turns only

Files: `.jsonl`/`.json` (one JSON object per non-empty line), `.parquet` (one row per record; columns named as the
fields, `messages` a list<struct<role, content>>; needs pyarrow: `pip install 'prov[parquet]'`), anything else
plain UTF-8 text with one text example per non-empty line (whitespace stripped). Field names are configurable
(`Fields`); the kind is given or detected from the records, and one dataset never mixes kinds.

Dataset root (`prov.dataset.v1`, the one definition the trainer and the verifier call):

    record_i           = the canonical projection of example i: exactly the fields training reads, under their
                         canonical names ("text" | "prompt", "completion" | "messages" as a list of
                         {"content", "role"}); every other field, and every other key of a message, is dropped
    salt_i             = HMAC-SHA256(dataset_key, b"example" || uint64_be(i))
    leaf_i             = SHA-256(0x00 || salt_i || canonical(record_i))
    root               = RFC 6962 root over leaf_0 .. leaf_{N-1}

Why the projection: the root should identify what was trained on, nothing else. Extra fields (ids, scores,
sources) are never trained on, and they would make the root depend on the container: the same data as JSONL or
parquet, or with other column names, must have the same root, yet JSON and parquet disagree on numbers, nulls and
timestamps, and canonical JSON has no floats at all. Projected records hold strings only, so the same strings give
the same bytes whatever the file format. Text records are `{"text": ...}` as before, so earlier roots stay valid.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from provenance import canonical, merkle
from provenance.errors import FormatError, UsageError, one_line
from provenance.hashing import Digest

DATASET_FORMAT = "prov.dataset.v1"
EXAMPLE_LABEL = b"example"
KINDS = ("text", "prompt_completion", "chat")
FORMATS = ("auto", "jsonl", "text", "parquet")
PARQUET_SUFFIXES = (".parquet", ".pq")
# The canonical field names of each kind, in the order they are checked.
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "text": ("text",), "prompt_completion": ("prompt", "completion"), "chat": ("messages",),
}
Record = dict[str, Any]
Example = str | Mapping[str, Any]


@dataclass(frozen=True)
class Fields:
    """The source field (JSON key / parquet column) holding each canonical field."""

    text: str = "text"
    prompt: str = "prompt"
    completion: str = "completion"
    messages: str = "messages"

    def of(self, kind: str) -> dict[str, str]:
        """Canonical name -> source name for the fields a record of `kind` is made of."""
        return {name: getattr(self, name) for name in KIND_FIELDS[kind]}

    def all(self) -> list[str]:
        return [self.text, self.prompt, self.completion, self.messages]

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Fields:
        """From data settings as a config commits them (`text_field`, `prompt_field`, ...; absent: default)."""
        names = {name: settings.get(f"{name}_field", getattr(cls, name)) for name in ("text", "prompt",
                                                                                      "completion", "messages")}
        if not all(isinstance(v, str) and v for v in names.values()):
            raise FormatError(f"data settings: field names must be non-empty strings, got {names!r}")
        return cls(**names)


@dataclass(frozen=True)
class Records(Sequence[Record]):
    """A loaded dataset: its kind, the field names it was read with, and each record's canonical projection."""

    kind: str
    items: tuple[Record, ...]
    fields: Fields = field(default_factory=Fields)

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> Record: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Record]: ...
    def __getitem__(self, index: int | slice) -> Record | Sequence[Record]:
        return self.items[index]

    def __iter__(self) -> Iterator[Record]:
        return iter(self.items)

    def texts(self) -> list[str]:
        """The example texts of a text dataset."""
        if self.kind != "text":
            raise UsageError(f"a {self.kind} dataset has no plain texts")
        return [r["text"] for r in self.items]


# --- projection --------------------------------------------------------------------------------------------


def _string(value: Any, *, where: str, name: str) -> str:
    if not isinstance(value, str):
        raise FormatError(f"{where}: {name} must be a string, got {_type_name(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(f"{where}: {name} is not valid Unicode (a lone surrogate)") from None
    return value


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _messages(value: Any, *, where: str, name: str) -> list[dict[str, str]]:
    if not isinstance(value, list | tuple):
        raise FormatError(f"{where}: {name!r} must be a list of {{role, content}} objects, got {_type_name(value)}")
    messages = []
    for j, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise FormatError(f"{where}: message {j} must be an object with string 'role' and 'content', "
                              f"got {_type_name(message)}")
        messages.append({"content": _string(message.get("content"), where=where, name=f"message {j} 'content'"),
                         "role": _string(message.get("role"), where=where, name=f"message {j} 'role'")})
    if not any(m["role"] == "assistant" for m in messages):
        raise FormatError(f"{where}: no 'assistant' message, so nothing would be trained on")
    return messages


def project(raw: Any, *, kind: str, fields: Fields = Fields(), where: str = "record") -> Record:
    """The canonical projection of one raw record of `kind` (see the module docstring). Bad input is one line."""
    if kind not in KINDS:
        raise UsageError(f"unknown data kind {kind!r} (one of {', '.join(KINDS)})")
    if not isinstance(raw, Mapping):
        raise FormatError(f"{where}: expected a JSON object, got {_type_name(raw)}")
    record: Record = {}
    for name, source in fields.of(kind).items():
        if raw.get(source) is None:
            needs = " and ".join(repr(s) for s in fields.of(kind).values())
            raise FormatError(f"{where}: missing field {source!r} (a {kind} record needs {needs})")
        if name == "messages":
            record[name] = _messages(raw[source], where=where, name=source)
        else:
            record[name] = _string(raw[source], where=where, name=repr(source))
    return record


def detect_kind(raw: Any, *, fields: Fields = Fields(), where: str = "record") -> str:
    """The kind a raw record's fields say it is; one line naming the fields when it is none or ambiguous."""
    if not isinstance(raw, Mapping):
        raise FormatError(f"{where}: expected a JSON object, got {_type_name(raw)}")
    present = [k for k in KINDS if any(raw.get(s) is not None for s in fields.of(k).values())]
    if len(present) == 1:
        return present[0]
    known = ", ".join(repr(s) for s in fields.all())
    if not present:
        raise FormatError(f"{where}: none of the fields {known}; set data.kind and the field names")
    raise FormatError(f"{where}: has fields of several kinds ({', '.join(present)}); set data.kind to choose one")


def example_record(example: Example) -> Record:
    """The record of one example that the dataset root commits to: a text, or an already projected record."""
    if isinstance(example, str):
        return {"text": example}
    kind = detect_kind(example)
    record = project(example, kind=kind)
    if set(example) != set(record):
        raise FormatError(f"not a canonical {kind} record: unexpected fields {sorted(set(example) - set(record))}")
    return record


# --- loading -----------------------------------------------------------------------------------------------


def load_records(path: str | os.PathLike[str], *, format: str = "auto", kind: str = "auto",
                 fields: Fields = Fields()) -> Records:
    """Read a dataset file in order and project every record; bad input is one line naming the file and row."""
    p = _check_path(path)
    if kind != "auto" and kind not in KINDS:
        raise UsageError(f"{p}: unknown data kind {kind!r} (one of auto, {', '.join(KINDS)})")
    if format not in FORMATS:
        raise UsageError(f"{p}: unknown data format {format!r} (one of {', '.join(FORMATS)})")
    if format == "auto":
        suffix = p.suffix.lower()
        format = "jsonl" if suffix in (".jsonl", ".json") else "parquet" if suffix in PARQUET_SUFFIXES else "text"
    _refuse_pickle(p)
    if format == "text":
        if kind not in ("auto", "text"):
            raise UsageError(f"{p}: plain-text data holds text examples only; give {kind} data as JSONL or parquet")
        raws: Iterator[tuple[str, Any]] = ((w, {fields.text: t}) for w, t in _text_lines(p))
    elif format == "jsonl":
        raws = _json_lines(p)
    else:
        raws = _parquet_rows(p, fields)
    resolved, first = kind, ""
    items: list[Record] = []
    for where, raw in raws:
        found = detect_kind(raw, fields=fields, where=where) if kind == "auto" else kind
        if not items:
            resolved, first = found, where
        elif found != resolved:
            raise FormatError(f"{where}: a {found} record, but {first} is {resolved}; one dataset holds one kind")
        items.append(project(raw, kind=found, fields=fields, where=where))
    if not items:
        raise UsageError(f"{p}: dataset holds no examples")
    return Records(resolved, tuple(items), fields)


def load_examples(path: str | os.PathLike[str], *, format: str = "auto", text_field: str = "text") -> list[str]:
    """The example texts of a text dataset (JSONL, parquet or plain text), in file order."""
    return load_records(path, format=format, kind="text", fields=Fields(text=text_field)).texts()


def load_committed(path: str | os.PathLike[str], dataset: Mapping[str, Any], *, format: str = "auto") -> Records:
    """Read data as a run manifest's `dataset` section says it was read (kind and field names): what resume and
    the verifier call. Sections written before kinds existed are text with `text_field`.

    A copy under the canonical field names (e.g. an auditor's parquet export) is read too when the committed
    names are absent: names are not committed, the projected records are, and the caller compares their root."""
    kind = dataset.get("kind", "text")
    names = dataset.get("fields") or {"text": dataset.get("text_field", "text")}
    if kind not in KINDS or not isinstance(names, Mapping) or set(names) != set(KIND_FIELDS[kind]) \
            or not all(isinstance(v, str) and v for v in names.values()):
        raise FormatError(f"run manifest: dataset kind {kind!r} with fields {names!r} is not a known combination")
    try:
        return load_records(path, format=format, kind=kind, fields=Fields(**names))
    except FormatError:
        if Fields(**names) == Fields():
            raise
        try:
            return load_records(path, format=format, kind=kind)
        except FormatError:
            pass
        raise


def _check_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{p}: dataset not found")
    if not p.is_file():
        raise UsageError(f"{p}: dataset must be a file (.jsonl, .parquet or plain text)")
    return p


def _refuse_pickle(p: Path) -> None:
    with p.open("rb") as f:
        head = f.read(2)
    if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        raise FormatError(f"{p}: looks like a Python pickle; prov never unpickles data (convert it to JSONL or "
                          "parquet)")


def _read_text(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{p}: dataset is not UTF-8 text") from None


def _text_lines(p: Path) -> Iterator[tuple[str, str]]:
    for number, line in enumerate(_read_text(p).splitlines(), start=1):
        if line.strip():
            yield f"{p} line {number}", line.strip()


def _json_lines(p: Path) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(_read_text(p).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{p} line {number}"
        yield where, canonical.load_json(line, source=where)


def _parquet_rows(p: Path, fields: Fields) -> Iterator[tuple[str, Any]]:
    """Rows of a parquet file as dicts of the record columns only (other columns are never decoded)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(f"{p}: reading parquet needs pyarrow: pip install 'prov[parquet]'") from None
    try:
        parquet = pq.ParquetFile(p)
        names = set(parquet.schema_arrow.names)
        columns = [c for c in dict.fromkeys(fields.all()) if c in names]
        if not columns:
            known = ", ".join(repr(s) for s in fields.all())
            raise FormatError(f"{p}: no column named {known}; set data.kind and the field names")
        rows = parquet.read(columns=columns).to_pylist()
    except FormatError:
        raise
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ValueError... for damaged files
        detail = one_line(exc, 200)
        raise FormatError(f"{p}: not a readable parquet file ({detail})") from None
    for number, row in enumerate(rows, start=1):
        yield f"{p} row {number}", {k: v for k, v in row.items() if v is not None}


# --- the commitment ----------------------------------------------------------------------------------------


def example_salt(dataset_key: bytes, index: int) -> bytes:
    return hmac.new(dataset_key, EXAMPLE_LABEL + index.to_bytes(8, "big"), hashlib.sha256).digest()


def example_leaf(dataset_key: bytes, index: int, example: Example) -> bytes:
    """The Merkle leaf hash of example `index`: `SHA-256(0x00 || salt_i || canonical(record_i))`."""
    return merkle.hash_leaf(example_salt(dataset_key, index) + canonical.encode(example_record(example)))


def dataset_leaves(examples: Sequence[Example], dataset_key: bytes) -> list[bytes]:
    return [example_leaf(dataset_key, i, example) for i, example in enumerate(examples)]


def dataset_root(examples: Sequence[Example], dataset_key: bytes) -> Digest:
    """The salted dataset root committed in the run manifest (`dataset.root`)."""
    return Digest(merkle.root(dataset_leaves(examples, dataset_key)))


def dataset_summary(examples: Sequence[Example], dataset_key: bytes, *, path: Path, max_length: int,
                    text_field: str | None = None) -> dict[str, Any]:
    """The run manifest's `dataset` section: root, size, kind and the field names the records were read with
    (`text_field` stays for readers that predate kinds)."""
    if isinstance(examples, Records):
        kind, fields = examples.kind, examples.fields
    else:
        kind = "text" if not examples else detect_kind(example_record(examples[0]))
        fields = Fields(text=text_field or "text")
    return {
        "fields": fields.of(kind),
        "format": DATASET_FORMAT,
        "kind": kind,
        "max_length": max_length,
        "name": path.name,
        "root": str(dataset_root(examples, dataset_key)),
        "size": len(examples),
        "text_field": fields.text if text_field is None else text_field,
    }
