"""Exact duplicate records in the data an auditor holds: reported with what they do to the per-person guarantee
(group privacy), because DP-SGD's ε bounds each record, not each person (#20)."""

from __future__ import annotations

from provenance._verify.data import duplicate_note, duplicates


def test_no_duplicates_no_note() -> None:
    assert duplicates(["a", "b", {"text": "a"}]) == (0, 1)
    assert duplicate_note(["a", "b"]) is None


def test_copies_are_counted_and_the_group_privacy_level_is_stated() -> None:
    # "a" three times, {"t": 1} twice (dicts compared by canonical encoding, key order irrelevant)
    data = ["a", "b", "a", {"t": 1, "u": 2}, "a", {"u": 2, "t": 1}]
    assert duplicates(data) == (5, 3)
    note = duplicate_note(data)
    assert note is not None and note.startswith("5 records are exact copies of another (up to 3 of one)")
    assert "k·ε" in note and "up to 3·ε" in note
