"""Poisson sampling that an auditor holding the noise seed can reproduce without torch (`prov.poisson.v1`).

For step k over a dataset of N examples with sample rate q:

    key    = HMAC-SHA256(noise_seed, b"sample" || uint64_be(k))
    stream = SHAKE-256(key), the first 8*N bytes
    u_i    = (uint64_be(stream[8i : 8i+8]) >> 11) * 2**-53      (a float64 uniform in [0, 1), exact)
    example i is in the batch  iff  u_i < q

The batch is the sorted list of such i; it may be empty (a real step: noise only). The sampler is stateless (the
state to checkpoint is only the step counter), so resume and replay of any step need nothing but the secret.
"""

from __future__ import annotations

import hashlib

import numpy as np

from provenance.secrets import SAMPLE_LABEL, step_key

SAMPLER_FORMAT = "prov.poisson.v1"
SAMPLER_FORMAT_V2 = "prov.poisson.v2"  # keys fixed after registration (issue #23)


def uniforms(noise_seed: bytes, step: int, dataset_size: int) -> np.ndarray:
    """The N float64 uniforms of step `step` (see the module docstring for the exact construction)."""
    stream = hashlib.shake_256(step_key(noise_seed, SAMPLE_LABEL, step)).digest(8 * dataset_size)
    words = np.frombuffer(stream, dtype=">u8").astype(np.uint64)
    return (words >> np.uint64(11)).astype(np.float64) * (2.0**-53)


def poisson_indices(noise_seed: bytes, step: int, dataset_size: int, sample_rate: float) -> list[int]:
    """Sorted dataset indices in step `step`'s Poisson batch."""
    if dataset_size <= 0:
        return []
    chosen = np.nonzero(uniforms(noise_seed, step, dataset_size) < sample_rate)[0]
    return [int(i) for i in chosen]
