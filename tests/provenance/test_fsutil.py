"""fsutil.read_input: a file the user named, or one line naming it and what is wrong, of the caller's error type."""

from __future__ import annotations

from pathlib import Path

import pytest

from provenance.errors import ConfigError, UsageError
from provenance.fsutil import read_input


def test_reads_the_whole_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"\x00abc")
    assert read_input(tmp_path / "f") == b"\x00abc"


def test_a_missing_file_names_the_path_and_the_callers_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_input(tmp_path / "nope.toml", missing="config file not found", error=ConfigError)
    assert str(info.value) == f"{tmp_path / 'nope.toml'}: config file not found"


def test_a_directory_is_unreadable_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        read_input(tmp_path, unreadable="cannot read the proof file")
    assert str(info.value) == f"{tmp_path}: cannot read the proof file (Is a directory)"
