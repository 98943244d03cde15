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
- keys fixed after registration (`prov.keys.v1`, runs whose manifest names `prov.noise.v3` / `prov.poisson.v2`): the
  sampler's and the noise's per-step keys use `HMAC-SHA256(noise_seed, b"prov.keys.v1" || block_hash)` in place of
  `noise_seed`, where `block_hash` (32 bytes) is the hash of the block that included the run's registration. That
  value exists only once the registration is on chain, so seeds ground before registering cannot choose the sample
  (issue #23). Dropout, the stats key and the batch key keep `noise_seed`. The trainer records the hash in
  `<run_dir>/keys.json`; the verifier reads it from the chain.
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
KEYS_LABEL = b"prov.keys.v1"
KEYS_NAME = "keys.json"
KEYS_FORMAT = "prov.keys.v1"
# Run-manifest formats whose sampler and noise keys are fixed after registration (see the module docstring).
ANCHORED_FORMATS = {"noise": "prov.noise.v3", "sampler": "prov.poisson.v2"}


def keys_anchored(manifest: Any) -> bool:
    """Whether a run manifest's sampler and noise keys derive from its registration's block hash."""
    formats = manifest.get("formats") if isinstance(manifest, dict) else None
    return isinstance(formats, dict) and formats.get("noise") == ANCHORED_FORMATS["noise"]


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
    anchor: bytes | None = None  # the registration's block hash (prov.keys.v1), public; None for older formats

    def __post_init__(self) -> None:
        for name in ("noise_seed", "dataset_key"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != SECRET_SIZE:
                raise FormatError(f"secret {name} must be {SECRET_SIZE} bytes")
        if self.anchor is not None and (not isinstance(self.anchor, bytes) or len(self.anchor) != 32):
            raise FormatError("the keys' anchor (a block hash) must be 32 bytes")

    def anchored(self, block_hash: bytes | None) -> Secrets:
        """These secrets with the sampler and noise keys fixed by `block_hash` (None: the pre-#23 keys)."""
        return Secrets(self.noise_seed, self.dataset_key, None if block_hash is None else bytes(block_hash))

    @property
    def sample_secret(self) -> bytes:
        """The secret the sampler and the noise keys derive from: `noise_seed`, or with an anchor
        `HMAC(noise_seed, "prov.keys.v1" || block_hash)`."""
        if self.anchor is None:
            return self.noise_seed
        return hmac.new(self.noise_seed, KEYS_LABEL + self.anchor, hashlib.sha256).digest()

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
        """The 128-bit key of step `step`'s noise generator (a Philox-4x64 key; `prov.noise.v3`: anchored)."""
        return step_key(self.sample_secret, NOISE_LABEL, step)[:16]

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


def save_anchor(run_dir: str | os.PathLike[str], *, block_hash: bytes, block_number: int) -> None:
    """Record the registration's block (`keys.json`, prov.keys.v1) so a resumed run derives the same keys."""
    doc = {"block_hash": "0x" + bytes(block_hash).hex(), "block_number": int(block_number), "format": KEYS_FORMAT}
    atomic_write(Path(run_dir) / KEYS_NAME, canonical.encode(doc) + b"\n")


def load_anchor(run_dir: str | os.PathLike[str]) -> tuple[bytes, int] | None:
    """The registration block (hash, number) a run recorded in `keys.json`, or None when it has none yet."""
    path = Path(run_dir) / KEYS_NAME
    if not path.exists():
        return None
    doc = canonical.read_document(path, KEYS_FORMAT, what="keys record", missing=FormatError(f"{path}: missing"))
    try:
        text, number = doc["block_hash"], doc["block_number"]
        raw = bytes.fromhex(text[2:] if text.startswith("0x") else "")
        if len(raw) != 32 or not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise ValueError
    except (KeyError, TypeError, ValueError, AttributeError):
        raise FormatError(f"{path}: needs block_hash (0x and 64 hex digits) and block_number") from None
    return raw, number


def run_secrets(run_dir: str | os.PathLike[str], manifest: Any) -> Secrets:
    """A run directory's secrets, checked against its manifest, with the keys' anchor from `keys.json` when the
    run's formats need one (refused, one line, when the run has not recorded its registration block yet)."""
    secrets = Secrets.load(Path(run_dir) / SECRETS_NAME)
    secrets.check_commitments(manifest["secrets"])
    if not keys_anchored(manifest):
        return secrets
    found = load_anchor(run_dir)
    if found is None:
        raise UsageError(f"{run_dir}: no {KEYS_NAME}: the run's sampling keys depend on its registration block, which "
                         "it has not recorded yet (resume it with `prov train --resume` once it is registered)")
    return secrets.anchored(found[0])
