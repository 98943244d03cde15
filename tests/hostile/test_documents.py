"""prov's own format-tagged files handed to the auditor (the secrets file above all, #22): a FIFO or an oversized file
is refused before a byte is read, and a wrong shape is one line naming the file."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from provenance.canonical import MAX_DOCUMENT
from provenance.errors import FormatError, ProvenanceError
from provenance.secrets import Secrets


def test_a_fifo_secrets_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "secrets.json"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            Secrets.load(fifo)
        except FormatError as exc:
            outcome.append(exc)

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # unblock the reader before failing, so the test process can exit
        with open(fifo, "wb"):
            pass
        raise AssertionError("reading a FIFO as the secrets file blocked")
    assert outcome, "a FIFO was read as a secrets file"
    assert "not a regular file" in str(outcome[0]) and str(fifo) in str(outcome[0])


def test_an_oversized_secrets_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    with path.open("wb") as out:
        out.truncate(MAX_DOCUMENT + 1)  # sparse: refused by its size alone
    with pytest.raises(FormatError, match="bytes is more than"):
        Secrets.load(path)


@pytest.mark.parametrize("doc", [[1], {"format": "prov.secrets.v1", "noise_seed": 5, "dataset_key": "00" * 32},
                                 {"format": "prov.secrets.v1", "noise_seed": "ab", "dataset_key": "00" * 32},
                                 {"format": "prov.secrets.v1", "noise_seed": {"a": [1]}, "dataset_key": "00" * 32},
                                 {"noise_seed": "00" * 32}])
def test_a_wrong_secrets_file_is_one_line_naming_it(tmp_path: Path, doc: object) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ProvenanceError) as info:
        Secrets.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
