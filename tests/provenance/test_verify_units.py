"""Pure parts of the verifier: committer timeline, replay segment choice, first divergence, subject parsing."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from provenance._verify.checks import CheckFailed
from provenance._verify.lineage import check_committers
from provenance._verify.replay import choose_segments, first_divergence
from provenance._verify.subject import load_subject
from provenance.errors import FormatError
from tests.provenance.test_steplog import rec

OWNER, WRITER = "0x" + "aa" * 20, "0x" + "bb" * 20
RUN = b"\x01" * 32


@dataclass
class Rec:
    index: int
    committer: str
    block_number: int


@dataclass
class Ev:
    name: str
    args: dict[str, Any]
    block_number: int
    log_index: int = 0


@dataclass
class Run:
    run_id: bytes = RUN
    owner: str = OWNER


def test_owner_only_never_fetches_events() -> None:
    def boom() -> list[Any]:
        raise AssertionError("fetched")

    assert check_committers([Rec(0, OWNER, 3), Rec(1, OWNER.upper().replace("0X", "0x"), 4)], boom, run=Run()) == 0


def test_writer_authorised_then_revoked() -> None:
    events = [Ev("WriterAuthorized", {"runId": RUN, "writer": WRITER}, 5),
              Ev("WriterRevoked", {"runId": RUN, "writer": WRITER}, 8)]
    assert check_committers([Rec(0, OWNER, 3), Rec(1, WRITER, 6)], lambda: events, run=Run()) == 1
    with pytest.raises(CheckFailed, match="checkpoint 2"):
        check_committers([Rec(0, OWNER, 3), Rec(1, WRITER, 6), Rec(2, WRITER, 9)], lambda: events, run=Run())
    other_run = [Ev("WriterAuthorized", {"runId": b"\x02" * 32, "writer": WRITER}, 5)]
    with pytest.raises(CheckFailed):
        check_committers([Rec(0, WRITER, 6)], lambda: other_run, run=Run())


def test_segment_choice_is_a_deterministic_function_of_the_seed() -> None:
    candidates = list(range(1, 101))
    a = choose_segments(b"\x00" * 32, candidates, 5)
    assert a == choose_segments(b"\x00" * 32, candidates, 5) and len(set(a)) == 5 and set(a) <= set(candidates)
    assert a != choose_segments(b"\x01" + b"\x00" * 31, candidates, 5)
    assert choose_segments(b"x", candidates, None) == candidates
    assert choose_segments(b"x", [3], 4) == [3]
    # Roughly uniform: over many seeds every candidate gets picked.
    picked = {c for s in range(200) for c in choose_segments(s.to_bytes(4, "big"), list(range(1, 11)), 1)}
    assert picked == set(range(1, 11))


def test_first_divergence_names_step_and_field() -> None:
    logged = [rec(i) for i in range(5)]
    assert first_divergence(logged, list(logged)) is None
    changed = list(logged)
    changed[3] = replace(changed[3], loss=123.0)
    assert first_divergence(logged, changed) == {"step": 3, "field": "loss", "expected": str(logged[3].loss),
                                                 "found": "123.0"}
    assert first_divergence(logged, logged[:4])["field"] == "steps"


def test_subject_reads_metadata_and_refuses_truncation(tmp_path: Path) -> None:
    path = tmp_path / "adapter_model.safetensors"
    save_file({"w": np.ones(4, dtype=np.float32)}, str(path), metadata={"prov.run_id": "ab"})
    subject = load_subject(path)
    assert subject.kind == "adapter" and subject.metadata["prov.run_id"] == "ab"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(FormatError, match="truncated"):
        load_subject(path)
