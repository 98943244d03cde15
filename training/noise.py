"""The DP noise of one step (`prov.noise.v2`): Gaussian, drawn from a counter-based generator keyed with 128 bits.

Definition (docs/formats.md, "Noise"): the key of step k is `Secrets.noise_key(k)` (16 bytes of
`HMAC(noise_seed, b"noise" || u64(k))`), read as two little-endian uint64 words: the key of numpy's Philox-4x64
bit generator at counter 0. Noise coordinates are numbered in the order of the adapter's trainable parameters
(PEFT names, module order), row-major within each; coordinate i consumes raw outputs `x[4i .. 4i+3]`:

    u_j = ((x_j >> 11) + 1) * 2^-53                       float64 uniforms in (0, 1] (never 0, so log is finite)
    a, b = sqrt(-2 ln u_0) * (cos 2πu_1, sin 2πu_1)       Box–Muller, torch float64 kernels
    c, d = sqrt(-2 ln u_2) * (cos 2πu_3, sin 2πu_3)
    z_i  = (((a + b) + c) + d) / 2                        a standard normal
    noise_i = (σ·C · z_i) cast to the parameter dtype

Why 128 bits: a CPU `torch.Generator` keeps only 32 bits of its seed, so the noise of a step published in two
public optimizer states could be found by search and subtracted (issue 13). Philox-4x64 with a 128-bit key is
deterministic (replay) and has no such shortcut.

Why four normals per coordinate: following Opacus' `secure_mode`, each coordinate is the sum of 4 independent
standard normals divided by 2 (same variance). Floating-point Gaussian samplers produce values on a lattice whose
gaps leak which draws are possible (Mironov 2012; Jin et al. 2021 recover noise from Box–Muller/Opacus samples);
summing 4 draws makes the support of the sample dense enough that this attack is no longer practical. We follow
Opacus this far and no further: Opacus also draws from a CSPRNG (torchcsprng) in secure mode, which cannot be
replayed and is not installable here; our Philox key is already secret and 128 bits, which is what the
CSPRNG was for. The transcendental functions run as torch float64 kernels so the recorded CPU capability governs
them like every other kernel of the step; noise is always computed on the CPU (the same bits on every device).

Cost: 4 raw draws and ~6 float64 transcendental operations per coordinate (bench/bench_train.py measures it
against a DP step). Drawing is chunked so memory stays bounded for large adapters; chunking does not change the
values (the stream is consumed in order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from provenance.errors import UsageError
from provenance.secrets import Secrets

NOISE_FORMAT = "prov.noise.v2"
KEY_SIZE = 16
RAWS_PER_COORDINATE = 4
CHUNK = 1 << 18  # coordinates per draw: bounds the float64 temporaries to a few MB
_TWO_PI = 2.0 * math.pi


class NoiseStream:
    """The standard normals of one key, in coordinate order; `next(count)` returns the next `count` of them."""

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != KEY_SIZE:
            raise UsageError(f"a {NOISE_FORMAT} key must be {KEY_SIZE} bytes")
        words = np.frombuffer(key, dtype="<u8").astype(np.uint64)
        self._bits = np.random.Philox(key=words)  # counter 0

    def next(self, count: int) -> torch.Tensor:
        """The next `count` standard normals as a float64 CPU tensor."""
        out = torch.empty(count, dtype=torch.float64)
        done = 0
        while done < count:
            n = min(CHUNK, count - done)
            out[done : done + n] = self._normals(n)
            done += n
        return out

    def _normals(self, n: int) -> torch.Tensor:
        raw = self._bits.random_raw(RAWS_PER_COORDINATE * n)
        u = torch.from_numpy(((raw >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * 2.0**-53).view(n, 4)
        radius = torch.sqrt(-2.0 * torch.log(u[:, 0::2]))  # (n, 2): the radii of the two pairs
        angle = _TWO_PI * u[:, 1::2]
        cos = radius * torch.cos(angle)
        sin = radius * torch.sin(angle)
        return (((cos[:, 0] + sin[:, 0]) + cos[:, 1]) + sin[:, 1]) / 2.0


def standard_normals(key: bytes, count: int) -> torch.Tensor:
    """The first `count` standard normals of the stream keyed by `key` (float64)."""
    return NoiseStream(key).next(count)


def step_noise(secrets: Secrets, step: int, *, count: int, std: float, dtype: torch.dtype) -> torch.Tensor:
    """The flat noise vector of step `step` for `count` coordinates: `std · z` cast to `dtype` (CPU tensor).

    `std` is σ·C (noise multiplier times clipping norm) as a Python float; the product with z is float64 and is
    rounded once, to `dtype`.
    """
    z = NoiseStream(secrets.noise_key(step)).next(count)
    return (z * float(std)).to(dtype)


def noise_for(secrets: Secrets, step: int, *, shapes: Sequence[torch.Size], std: float,
              dtype: torch.dtype) -> list[torch.Tensor]:
    """The noise of step `step` split into tensors of the given parameter shapes, in order."""
    sizes = [math.prod(s) for s in shapes]
    flat = step_noise(secrets, step, count=sum(sizes), std=std, dtype=dtype)
    return [part.view(shape) for part, shape in zip(torch.split(flat, sizes), shapes, strict=True)]
