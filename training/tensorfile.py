"""Deterministic safetensors bytes for checkpoint files.

The `safetensors` library orders `__metadata__` keys by a per-process hash map, so the same tensors and metadata
can give different bytes (and digests) in two processes. This writer fixes the layout: 8-byte little-endian header
length, canonical-JSON header (sorted keys, no whitespace) padded with spaces to a multiple of 8, then each tensor's
C-order little-endian bytes in sorted name order. The result is a valid safetensors file (readers, PEFT included,
load it) whose bytes are a pure function of the tensors and metadata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from provenance.errors import FormatError
from provenance.records import encode_safetensors

_DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def encode(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """The safetensors bytes of `tensors` with string `metadata`, in the fixed layout described above
    (written by `provenance.records.encode_safetensors`, the one writer of that layout)."""
    entries: dict[str, tuple[str, Sequence[int], bytes]] = {}
    for name, value in tensors.items():
        tensor = value.detach().to("cpu").contiguous()
        dtype = _DTYPES.get(tensor.dtype)
        if dtype is None:
            raise FormatError(f"tensor {name!r}: unsupported dtype {tensor.dtype}")
        data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        entries[name] = (dtype, tuple(tensor.shape), data)
    return encode_safetensors(entries, metadata)
