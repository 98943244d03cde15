"""Deterministic safetensors bytes: a golden vector, readability by the safetensors library, metadata order."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import torch
from safetensors.torch import load

from training.tensorfile import encode

# Written out by hand from the layout in training/tensorfile.py: header length 160 (LE), canonical header padded
# with three spaces to a multiple of 8, then tensors in name order ("i" then "w"), little-endian.
GOLDEN = (
    b'\xa0\x00\x00\x00\x00\x00\x00\x00{"__metadata__":{"format":"pt","prov.step":"1"},"i":{"data_offsets":[0,8],'
    b'"dtype":"I64","shape":[1]},"w":{"data_offsets":[8,16],"dtype":"F32","shape":[1,2]}}   '
    b"\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80?\x00\x00\x00\xc0"
)


def test_golden_bytes_and_library_round_trip() -> None:
    tensors = {"w": torch.tensor([[1.0, -2.0]]), "i": torch.tensor([3], dtype=torch.int64)}
    data = encode(tensors, {"prov.step": "1", "format": "pt"})
    assert data == GOLDEN
    back = load(data)
    assert set(back) == {"w", "i"} and all(torch.equal(back[k], tensors[k]) for k in tensors)


def test_same_bytes_in_another_process() -> None:
    """The safetensors library orders metadata by a per-process hash; our writer must not."""
    code = (
        "import torch, hashlib; from training.tensorfile import encode; "
        "print(hashlib.sha256(encode({'a': torch.ones(2), 'b': torch.zeros(0, 3)}, "
        "{'z': '1', 'prov.run_id': 'ab', 'prov.checkpoint': '2', 'm': 'x'})).hexdigest())"
    )
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout}
    here = hashlib.sha256(encode({"a": torch.ones(2), "b": torch.zeros(0, 3)},
                                 {"m": "x", "prov.checkpoint": "2", "prov.run_id": "ab", "z": "1"})).hexdigest()
    assert runs == {here + "\n"}
