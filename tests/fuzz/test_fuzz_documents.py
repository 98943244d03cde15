"""Fuzz: canonical JSON documents from a trust boundary — canonical.decode, checkpoint and run manifests, step
records and step-log segments. Random bytes; arbitrary JSON (deep, big integers, floats); the golden documents
with one field replaced by an arbitrary value; and golden bytes with one byte changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provenance import canonical
from provenance.manifest import CheckpointManifest, decode_run_manifest
from provenance.records import StepRecord, step_record_from_json
from provenance.steplog import parse_records
from tests.fixtures.store import FUZZ, FUZZ_SLOW, value_or_one_line_error

GOLDEN = Path(__file__).resolve().parents[1] / "provenance" / "golden"
DOCUMENTS = {name: (GOLDEN / f"{name}.json").read_bytes() for name in ("checkpoint.v1", "run.v1", "step.v1",
                                                                        "step.v2")}

json_scalars = (st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.text(max_size=8)
                | st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=10)


def replace_one(value: Any, path_choice: int, new: Any) -> Any:
    """`value` with the `path_choice`-th node (pre-order) replaced by `new`."""
    counter = [path_choice]

    def walk(node: Any) -> Any:
        if counter[0] == 0:
            counter[0] = -1
            return new
        counter[0] -= 1
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(value)


@st.composite
def mutated_document(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(sorted(DOCUMENTS)))
    data = DOCUMENTS[name]
    how = draw(st.sampled_from(["field", "byte", "deep", "noise"]))
    if how == "field":
        value = replace_one(json.loads(data), draw(st.integers(0, 40)), draw(json_values))
        return json.dumps(value, sort_keys=draw(st.booleans()), separators=(",", ":")).encode()
    if how == "byte":
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    if how == "deep":
        depth = draw(st.integers(50, 5000))
        return b'{"files":' + b"[" * depth + b"]" * depth + b',"format":"prov.checkpoint.v1"}'
    return data + draw(st.binary(max_size=8))


documents = st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()) | mutated_document()


def check_document(data: bytes) -> None:
    value_or_one_line_error(lambda: canonical.decode(data, source="doc", strict=True))
    value_or_one_line_error(lambda: CheckpointManifest.decode(data, source="doc"))
    value_or_one_line_error(lambda: decode_run_manifest(data, source="doc"))
    parsed = value_or_one_line_error(lambda: canonical.decode(data, source="doc"))
    if not isinstance(parsed, Exception):
        value_or_one_line_error(lambda: step_record_from_json(parsed))
        value_or_one_line_error(lambda: StepRecord.from_json(parsed))


@st.composite
def segments(draw: st.DrawFn) -> bytes:
    lines = []
    for step in range(draw(st.integers(0, 3))):
        record = json.loads(DOCUMENTS[draw(st.sampled_from(["step.v1", "step.v2"]))])
        record["step"] = step
        lines.append(canonical.encode({"leaf": "00" * 32, "record": record, "root": "00" * 32}))
    data = b"".join(line + b"\n" for line in lines)
    if data and draw(st.booleans()):
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + draw(st.binary(min_size=1, max_size=3)) + data[at + 1 :]
    return data


def check_segment(data: bytes) -> None:
    value_or_one_line_error(lambda: parse_records(data, source="segment"))


@FUZZ
@given(documents)
def test_documents(data: bytes) -> None:
    check_document(data)


@FUZZ
@given(st.binary(max_size=200) | segments())
def test_step_log_segments(data: bytes) -> None:
    check_segment(data)


@pytest.mark.slow
@FUZZ_SLOW
@given(documents)
def test_documents_long(data: bytes) -> None:
    check_document(data)


@pytest.mark.slow
@FUZZ_SLOW
@given(st.binary(max_size=200) | segments())
def test_step_log_segments_long(data: bytes) -> None:
    check_segment(data)
