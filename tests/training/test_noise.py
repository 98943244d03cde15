"""Noise v2 (`prov.noise.v2`): a 128-bit key governs every coordinate, the stream is reproducible in a fresh
process, it matches a naive reference of its definition, and its statistics are those of N(0, σ²C²)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from provenance.errors import UsageError
from provenance.secrets import Secrets
from training.noise import noise_for, standard_normals, step_noise

KEY = bytes(range(100, 116))


def naive_normals(key: bytes, count: int) -> list[float]:
    """The definition in training/noise.py, one coordinate at a time with Python's math (docs/formats.md)."""
    bits = np.random.Philox(key=np.frombuffer(key, dtype="<u8").astype(np.uint64))
    raw = [int(x) for x in bits.random_raw(4 * count)]
    out = []
    for i in range(count):
        u = [((x >> 11) + 1) * 2.0**-53 for x in raw[4 * i : 4 * i + 4]]
        r1, r2 = math.sqrt(-2.0 * math.log(u[0])), math.sqrt(-2.0 * math.log(u[2]))
        a, b = r1 * math.cos(2 * math.pi * u[1]), r1 * math.sin(2 * math.pi * u[1])
        c, d = r2 * math.cos(2 * math.pi * u[3]), r2 * math.sin(2 * math.pi * u[3])
        out.append((((a + b) + c) + d) / 2.0)
    return out


def test_matches_the_naive_definition() -> None:
    # torch's vectorised log/cos/sin may differ from libm in the last bit, so compare to 1e-12, not bitwise
    fast = standard_normals(KEY, 257).tolist()
    assert fast == pytest.approx(naive_normals(KEY, 257), rel=1e-12, abs=1e-12)


def test_every_key_bit_changes_the_noise() -> None:
    base = standard_normals(KEY, 16)
    draws = [base]
    for bit in range(128):
        flipped = bytearray(KEY)
        flipped[bit // 8] ^= 1 << (bit % 8)
        draws.append(standard_normals(bytes(flipped), 16))
    assert len(draws) == 129
    for i, a in enumerate(draws):
        for b in draws[i + 1 :]:
            assert not torch.equal(a, b)
    # no coordinate of a flipped-key draw equals the base draw's (the streams are unrelated, not shifted copies)
    assert all(not bool((d == base).any()) for d in draws[1:])


def test_chunking_does_not_change_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = standard_normals(KEY, 1000)
    import training.noise

    monkeypatch.setattr(training.noise, "CHUNK", 7)
    assert torch.equal(standard_normals(KEY, 1000), whole)
    assert torch.equal(standard_normals(KEY, 10), whole[:10])  # a prefix of a longer draw


def test_same_key_same_noise_in_a_fresh_process() -> None:
    code = ("import sys, torch; from training.noise import standard_normals; "
            f"sys.stdout.write(standard_normals({KEY!r}, 64).numpy().tobytes().hex())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout == standard_normals(KEY, 64).numpy().tobytes().hex()


def test_statistics_of_a_large_draw() -> None:
    sigma, clip, n = 1.3, 0.7, 1_000_000
    secrets = Secrets(bytes(range(32)), bytes(32))
    noise = step_noise(secrets, 5, count=n, std=sigma * clip, dtype=torch.float64)
    std = sigma * clip
    mean, var = float(noise.mean()), float(noise.var())
    # mean of n normals has sd std/sqrt(n); the sample variance has relative sd sqrt(2/n): 6 sd bounds
    assert abs(mean) < 6 * std / math.sqrt(n)
    assert abs(var / std**2 - 1.0) < 6 * math.sqrt(2.0 / n)
    z = noise / std  # a standard normal's 4th moment is 3 (sums of 4 normals / 2 stay Gaussian)
    assert abs(float((z**4).mean()) - 3.0) < 0.05


def test_step_noise_uses_the_step_key_and_parameter_shapes() -> None:
    secrets = Secrets(bytes(range(32)), bytes(32))
    a = step_noise(secrets, 3, count=10, std=2.0, dtype=torch.float32)
    assert a.dtype == torch.float32
    assert torch.equal(a, (standard_normals(secrets.noise_key(3), 10) * 2.0).to(torch.float32))
    assert not torch.equal(a, step_noise(secrets, 4, count=10, std=2.0, dtype=torch.float32))
    parts = noise_for(secrets, 3, shapes=[torch.Size([2, 3]), torch.Size([4])], std=2.0, dtype=torch.float32)
    assert [p.shape for p in parts] == [torch.Size([2, 3]), torch.Size([4])]
    assert torch.equal(torch.cat([p.reshape(-1) for p in parts]), a)


def test_bad_key_is_refused() -> None:
    with pytest.raises(UsageError, match="16 bytes"):
        standard_normals(b"short", 3)
