"""The run's two secrets, their public commitments, and every value derived from them (no torch: the verifier
recomputes every derivation; the trainer's torch-side uses live in `training`).

`noise_seed` (32 bytes) drives the DP noise, the Poisson sampler and LoRA dropout; `dataset_key` (32 bytes) salts
the dataset root. Both are kept in `<run_dir>/secrets.json` (mode 0600) and revealed only to an auditor. They never
appear in a manifest, a log line or an error message.

Derivations (byte layouts are part of the format; the verifier recomputes them):

- commitment: `SHA-256(secret)` (DESIGN.md, "Noise seed"), as `sha256:<hex>`.
- per-step key: `HMAC-SHA256(noise_seed, label || uint64_be(step))` with label `b"noise"`, `b"sample"` or
  `b"dropout"`; the noise generator's key is its first 16 bytes (128 bits).
- stats key `HMAC-SHA256(noise_seed, b"prov.stats.v1")`, batch key `HMAC-SHA256(dataset_key, b"prov.batch.v2")`
  (docs/formats.md).
- a torch seed from a key: the first 8 bytes as an unsigned big-endian integer (torch accepts all 64 bits).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance import canonical
from provenance.errors import FormatError, UsageError
from provenance.fsutil import atomic_write
from provenance.hashing import Digest

SECRETS_NAME = "secrets.json"
SECRETS_FORMAT = "prov.secrets.v1"
SECRET_SIZE = 32

NOISE_LABEL = b"noise"
SAMPLE_LABEL = b"sample"
DROPOUT_LABEL = b"dropout"
STATS_LABEL = b"prov.stats.v1"
BATCH_LABEL = b"prov.batch.v2"


def step_key(secret: bytes, label: bytes, step: int) -> bytes:
    """`HMAC-SHA256(secret, label || uint64_be(step))`: the per-step key for one kind of randomness."""
    if step < 0:
        raise UsageError(f"step must be >= 0, got {step}")
    return hmac.new(secret, label + step.to_bytes(8, "big"), hashlib.sha256).digest()


def seed_of(key: bytes) -> int:
    """A 64-bit torch seed from a derived key: the first 8 bytes, big-endian, unsigned."""
    return int.from_bytes(key[:8], "big")


@dataclass(frozen=True)
class Secrets:
    noise_seed: bytes
    dataset_key: bytes

    def __post_init__(self) -> None:
        for name in ("noise_seed", "dataset_key"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != SECRET_SIZE:
                raise FormatError(f"secret {name} must be {SECRET_SIZE} bytes")

    def __repr__(self) -> str:  # never print the values
        return "Secrets(<redacted>)"

    @classmethod
    def generate(cls) -> Secrets:
        return cls(os.urandom(SECRET_SIZE), os.urandom(SECRET_SIZE))

    def commitments(self) -> dict[str, str]:
        """What the run manifest publishes: `H(noise_seed)` and `H(dataset_key)`."""
        return {
            "dataset_key_commitment": str(Digest.of(self.dataset_key)),
            "noise_seed_commitment": str(Digest.of(self.noise_seed)),
        }

    def check_commitments(self, manifest_secrets: dict[str, Any]) -> None:
        """Refuse secrets that do not open the commitments of a run manifest (wrong secrets file)."""
        mine = self.commitments()
        for name, value in mine.items():
            if manifest_secrets.get(name) != value:
                raise UsageError(f"the secrets do not match the run manifest's {name}")

    def noise_key(self, step: int) -> bytes:
        """The 128-bit key of step `step`'s noise generator (`prov.noise.v2`: a Philox-4x64 key)."""
        return step_key(self.noise_seed, NOISE_LABEL, step)[:16]

    def stats_key(self) -> bytes:
        """`HMAC(noise_seed, "prov.stats.v1")`: salts the commitments to per-step loss and clipped fraction."""
        return hmac.new(self.noise_seed, STATS_LABEL, hashlib.sha256).digest()

    def batch_key(self) -> bytes:
        """`HMAC(dataset_key, "prov.batch.v2")`: salts the per-example leaves of every batch commitment."""
        return hmac.new(self.dataset_key, BATCH_LABEL, hashlib.sha256).digest()

    def dropout_seed(self, step: int) -> int:
        """The global torch seed set right before step `step` (LoRA dropout masks)."""
        return seed_of(step_key(self.noise_seed, DROPOUT_LABEL, step))

    def to_json(self) -> dict[str, str]:
        return {"dataset_key": self.dataset_key.hex(), "format": SECRETS_FORMAT, "noise_seed": self.noise_seed.hex()}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the secrets file with mode 0600 (created private; never world-readable, even briefly)."""
        target = Path(path)
        atomic_write(target, canonical.encode(self.to_json()) + b"\n", mode=stat.S_IRUSR | stat.S_IWUSR)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Secrets:
        p = Path(path)
        if p.is_dir():
            p = p / SECRETS_NAME
        data = canonical.read_document(p, SECRETS_FORMAT, missing=UsageError(f"{p}: secrets file not found"),
                                       what="secrets file")
        try:
            return cls(bytes.fromhex(data["noise_seed"]), bytes.fromhex(data["dataset_key"]))
        except (KeyError, TypeError, ValueError, FormatError):  # FormatError: a wrong length (#22: name the file)
            raise FormatError(f"{p}: secrets file needs noise_seed and dataset_key as 64 hex digits") from None
