"""Dataset records (text, prompt/completion, chat) from JSONL, parquet and plain text; the dataset root commits to
each record's canonical projection, so the container, the column names and unused fields do not change it."""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provenance import merkle
from provenance.dataset import (
    Fields,
    Records,
    dataset_root,
    dataset_summary,
    example_record,
    load_committed,
    load_examples,
    load_records,
)
from provenance.errors import FormatError, ProvenanceError, UsageError

KEY = bytes(range(32))

TEXT = [{"text": "alpha"}, {"text": "béta ✓"}, {"text": "gamma \"quoted\"\nnewline"}]
PROMPT_COMPLETION = [
    {"prompt": "What is 2+2?", "completion": " 4"},
    {"prompt": "Capital of France?", "completion": " Paris."},
    {"prompt": "", "completion": "empty prompt"},
]
CHAT = [
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "why?"},
                  {"role": "assistant", "content": "because"}, {"role": "user", "content": "ok"},
                  {"role": "assistant", "content": "ok"}]},
]
CASES = {"text": TEXT, "prompt_completion": PROMPT_COMPLETION, "chat": CHAT}
RENAMED = Fields(text="body", prompt="question", completion="answer", messages="conversation")


def naive_root(records: list[dict[str, Any]], key: bytes) -> bytes:
    """The dataset root written out by hand: leaf(HMAC(key, "example" || u64(i)) || sorted-key compact JSON)."""
    leaves = []
    for i, record in enumerate(records):
        salt = hmac.new(key, b"example" + i.to_bytes(8, "big"), hashlib.sha256).digest()
        body = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        leaves.append(hashlib.sha256(b"\x00" + salt + body).digest())
    return merkle.root(leaves)


def renamed_with_extras(record: dict[str, Any]) -> dict[str, Any]:
    """The same record under other field names, with fields training never reads (floats, nulls, nesting)."""
    out: dict[str, Any] = {"id": 7, "score": 0.25, "source": None, "meta": {"lang": "en", "weights": [1.5, 2]}}
    for canonical_name, value in record.items():
        if canonical_name == "messages":
            value = [{**m, "name": "x", "weight": 0.5} for m in value]
        out[getattr(RENAMED, canonical_name)] = value
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n\n" for r in rows))  # blank lines are skipped
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    """One column per key of any row (null where a row lacks it); pyarrow infers the types."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    pq.write_table(pa.table({k: [r.get(k) for r in rows] for k in names}), path)
    return path


@pytest.mark.parametrize("kind", list(CASES))
def test_jsonl_parquet_renamed_and_extra_fields_give_one_root(tmp_path: Path, kind: str) -> None:
    rows = CASES[kind]
    expected = naive_root(rows, KEY)
    extras = [renamed_with_extras(r) for r in rows]
    variants = [
        load_records(write_jsonl(tmp_path / "plain.jsonl", rows)),
        load_records(write_parquet(tmp_path / "plain.parquet", rows)),
        load_records(write_jsonl(tmp_path / "renamed.jsonl", extras), fields=RENAMED),
        load_records(write_parquet(tmp_path / "renamed.parquet", extras), fields=RENAMED, kind=kind),
    ]
    for records in variants:
        assert records.kind == kind
        assert list(records) == rows  # the canonical projection: canonical names, nothing else
        assert dataset_root(records, KEY).value == expected
    assert dataset_root(variants[0], bytes(32)).value != expected
    changed = json.loads(json.dumps(rows))
    first = changed[0]
    if kind == "chat":
        first["messages"][-1]["content"] += "!"
    else:
        first[next(iter(first))] += "!"
    assert dataset_root(changed, KEY).value != expected


def test_text_roots_are_unchanged_whatever_the_container(tmp_path: Path) -> None:
    texts = [r["text"] for r in TEXT[:2]] + ["third"]
    expected = naive_root([{"text": t} for t in texts], KEY)
    plain = tmp_path / "d.txt"
    plain.write_text("\n".join(texts) + "\n")
    assert dataset_root(texts, KEY).value == expected  # plain strings, as runs before kinds committed them
    for path in (plain, write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts]),
                 write_parquet(tmp_path / "d.parquet", [{"text": t, "n": 1.0} for t in texts])):
        assert dataset_root(load_records(path), KEY).value == expected
        assert load_examples(path) == texts


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.text(), st.text()), min_size=1, max_size=6))
def test_any_strings_have_one_root_in_jsonl_and_parquet(tmp_path_factory: pytest.TempPathFactory,
                                                        pairs: list[tuple[str, str]]) -> None:
    folder = tmp_path_factory.mktemp("h")
    rows = [{"prompt": p, "completion": c} for p, c in pairs]
    from_jsonl = load_records(write_jsonl(folder / "d.jsonl", rows))
    from_parquet = load_records(write_parquet(folder / "d.parquet", rows))
    assert list(from_jsonl) == list(from_parquet) == rows
    assert dataset_root(from_jsonl, KEY) == dataset_root(from_parquet, KEY)


def test_kind_is_detected_or_given_and_never_mixed(tmp_path: Path) -> None:
    both = write_jsonl(tmp_path / "both.jsonl", [{"text": "t", "prompt": "p", "completion": "c"}])
    with pytest.raises(FormatError, match=r"line 1: has fields of several kinds .*set data\.kind"):
        load_records(both)
    # with the kind given, the other kind's fields are unused extras
    assert list(load_records(both, kind="text")) == [{"text": "t"}]
    assert list(load_records(both, kind="prompt_completion")) == [{"completion": "c", "prompt": "p"}]
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [TEXT[0], TEXT[1], PROMPT_COMPLETION[0]])
    with pytest.raises(FormatError, match=r"mixed\.jsonl line 5: a prompt_completion record, but .*line 1 is text"):
        load_records(mixed)
    mixed_parquet = write_parquet(tmp_path / "mixed.parquet", [TEXT[0], PROMPT_COMPLETION[0]])
    with pytest.raises(FormatError, match=r"row 2: a prompt_completion record, but .* row 1 is text"):
        load_records(mixed_parquet)
    with pytest.raises(FormatError, match=r"line 5: missing field 'text'"):
        load_records(mixed, kind="text")


def test_manifest_section_reads_the_data_as_committed(tmp_path: Path) -> None:
    extras = [renamed_with_extras(r) for r in PROMPT_COMPLETION]
    path = write_parquet(tmp_path / "d.parquet", extras)
    records = load_records(path, fields=RENAMED)
    summary = dataset_summary(records, KEY, path=path, max_length=64)
    assert summary["kind"] == "prompt_completion"
    assert summary["fields"] == {"completion": "answer", "prompt": "question"}
    assert summary["root"] == str(dataset_root(PROMPT_COMPLETION, KEY)) and summary["size"] == 3
    again = load_committed(path, summary)
    assert again.kind == records.kind and again.items == records.items
    # an auditor's JSONL copy under the committed field names gives the same records
    assert list(load_committed(write_jsonl(tmp_path / "copy.jsonl", extras), summary)) == PROMPT_COMPLETION
    # a copy under the canonical names is read too (the root, not the names, is what the caller compares) ...
    canonical_copy = write_parquet(tmp_path / "canonical.parquet", PROMPT_COMPLETION)
    assert list(load_committed(canonical_copy, summary)) == PROMPT_COMPLETION
    # ... and a copy under neither names is the error of the committed names
    with pytest.raises(FormatError, match=r"other\.jsonl line 1: missing field 'question'"):
        load_committed(write_jsonl(tmp_path / "other.jsonl", [{"q": "x", "a": "y"}]), summary)
    # sections written before kinds existed: text under `text_field`
    old = {"format": "prov.dataset.v1", "text_field": "body", "root": "x"}
    texts = write_jsonl(tmp_path / "t.jsonl", [{"body": "a"}, {"body": "b"}])
    assert load_committed(texts, old).texts() == ["a", "b"]
    for bad in ({"kind": "chat", "fields": {"text": "x"}}, {"kind": "poem"}, {"kind": "text", "fields": {"text": 1}}):
        with pytest.raises(FormatError, match="run manifest"):
            load_committed(texts, bad)


def test_summary_of_plain_texts_keeps_its_old_fields() -> None:
    summary = dataset_summary(["a", "b"], KEY, path=Path("d.txt"), max_length=32, text_field="body")
    assert summary["kind"] == "text" and summary["fields"] == {"text": "body"} and summary["text_field"] == "body"
    assert summary["format"] == "prov.dataset.v1" and summary["root"] == str(dataset_root(["a", "b"], KEY))


def test_example_record_accepts_texts_and_canonical_records_only() -> None:
    assert example_record("x") == {"text": "x"}
    assert example_record(CHAT[0]) == CHAT[0]
    with pytest.raises(FormatError, match="unexpected fields"):
        example_record({"prompt": "p", "completion": "c", "id": "1"})
    records = Records("text", ({"text": "a"},))
    assert records.texts() == ["a"] and len(records) == 1 and records[0] == {"text": "a"}
    with pytest.raises(UsageError, match="no plain texts"):
        Records("chat", tuple(CHAT)).texts()


MSG = '{"messages": %s}\n'
BAD_JSONL = [
    ('{"prompt": "p"}\n', r"line 1: missing field 'completion' \(a prompt_completion record needs 'prompt' and "),
    ('{"text": "ok"}\n{"text": 5}\n', r"line 2: 'text' must be a string, got int"),
    ('{"text": null}\n', r"line 1: none of the fields"),
    ('{"prompt": "p", "completion": ["c"]}\n', r"'completion' must be a string, got list"),
    (MSG % '[{"role": 1, "content": "x"}]', r"line 1: message 0 'role' must be a string, got int"),
    (MSG % '[{"role": "user"}, {"role": "assistant", "content": null}]', r"message 0 'content' must be .*, got null"),
    (MSG % '"hello"', r"'messages' must be a list of \{role, content\} objects, got str"),
    (MSG % '["hello"]', r"message 0 must be an object"),
    (MSG % '[{"role": "user", "content": "x"}]', r"no 'assistant' message"),
    ('{"text": "\\ud800"}\n', r"not valid Unicode"),
    ('["text"]\n', r"line 1: expected a JSON object, got list"),
    ('{"text": "a"}\n{"text": \n', r"line 2: not valid JSON"),
    ("\n\n", r"holds no examples"),
    ("[" * 100000 + "\n", r"line 1: JSON nested deeper than 64 levels"),
]


@pytest.mark.parametrize(("content", "message"), BAD_JSONL)
def test_bad_jsonl_is_one_line_naming_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ProvenanceError, match=message) as info:
        load_records(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    cases: list[tuple[Path, dict[str, Any], type[ProvenanceError], str]] = []
    pickled = tmp_path / "data.jsonl"
    pickled.write_bytes(pickle.dumps([{"text": "x"}]))
    cases.append((pickled, {}, FormatError, "looks like a Python pickle"))
    fake = tmp_path / "data.parquet"
    fake.write_bytes(pickle.dumps({"text": ["x"]}, protocol=2))
    cases.append((fake, {}, FormatError, "looks like a Python pickle"))
    good = write_parquet(tmp_path / "good.parquet", TEXT)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[:-40])
    cases.append((truncated, {}, FormatError, "not a readable parquet file"))
    not_parquet = tmp_path / "text.parquet"
    not_parquet.write_text('{"text": "x"}\n')
    cases.append((not_parquet, {}, FormatError, "not a readable parquet file"))
    ints = write_parquet(tmp_path / "ints.parquet", [{"text": 1}])
    cases.append((ints, {}, FormatError, r"row 1: 'text' must be a string, got int"))
    roles = write_parquet(tmp_path / "roles.parquet", [{"messages": [{"role": 3, "content": "x"}]}])
    cases.append((roles, {}, FormatError, r"row 1: message 0 'role' must be a string, got int"))
    columns = write_parquet(tmp_path / "columns.parquet", [{"body": "x"}])
    cases.append((columns, {}, FormatError, r"no column named 'text', 'prompt'"))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    cases.append((latin, {}, FormatError, "not UTF-8"))
    cases.append((write_jsonl(tmp_path / "t.txt", [{"text": "x"}]), {"kind": "chat"}, UsageError,
                  "plain-text data holds text examples only"))
    cases.append((good, {"kind": "poem"}, UsageError, "unknown data kind 'poem'"))
    cases.append((good, {"format": "csv"}, UsageError, "unknown data format 'csv'"))
    cases.append((tmp_path / "absent.jsonl", {}, UsageError, "not found"))
    cases.append((tmp_path, {}, UsageError, "must be a file"))
    for path, options, error, message in cases:
        with pytest.raises(error, match=message) as info:
            load_records(path, **options)
        assert "\n" not in str(info.value) and str(path) in str(info.value), (path, str(info.value))


def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_parquet(tmp_path / "d.parquet", TEXT)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(UsageError, match=r"d\.parquet: reading parquet needs pyarrow: pip install 'prov\[parquet\]'"):
        load_records(path)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".jsonl", ".parquet", ".txt"]))
def test_arbitrary_bytes_load_or_fail_in_one_line(tmp_path_factory: pytest.TempPathFactory, data: bytes,
                                                  suffix: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / f"d{suffix}"
    path.write_bytes(data)
    try:
        records = load_records(path)
    except ProvenanceError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
    else:
        assert len(records) > 0 and dataset_root(records, KEY)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_damaged_parquet_loads_or_fails_in_one_line(tmp_path_factory: pytest.TempPathFactory, data: Any) -> None:
    folder = tmp_path_factory.mktemp("damaged")
    original = write_parquet(folder / "good.parquet", CHAT + CHAT).read_bytes()
    damaged = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    path = folder / "d.parquet"
    path.write_bytes(bytes(damaged))
    try:
        records = load_records(path)
    except ProvenanceError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
    else:
        assert records.kind == "chat" and len(records) == 4
