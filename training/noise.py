"""The DP noise generator of one step, keyed by the run's noise seed (see `provenance.secrets` for the derivation)."""

from __future__ import annotations

import torch

from provenance.secrets import NOISE_LABEL, Secrets, seed_of, step_key


def noise_generator(secrets: Secrets, step: int) -> torch.Generator:
    """The generator step `step` draws its Gaussian noise from (reseeded for every step)."""
    gen = torch.Generator()
    gen.manual_seed(seed_of(step_key(secrets.noise_seed, NOISE_LABEL, step)))
    return gen
