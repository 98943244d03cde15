"""Replay: which segments to re-run (an unpredictable beacon), running them through the replay worker with the
recorded determinism environment, and judging each rebuilt checkpoint against the committed one.

**Beacon.** Sampled segments are drawn from randomness the trainer could not know when it shipped its file: an
auditor seed — the one given with `--beacon`, or else 32 bytes this verifier draws from the operating system when
it runs — mixed with the hash of the block `confirmations` blocks after the run's *finalisation* when there is
one. Block hashes alone are not enough: on its own chain the trainer picks them, and on any chain it knows them
before it ships, so it could finalise several runs, each forging another segment, and ship the one whose draw
misses its forgery. The seed and block are recorded in the report, so anyone can redo the choice (`--beacon` with
the recorded seed). `--replay all` needs no beacon. Draws: `SHA-256(seed || uint32_be(i))` over the candidates
(partial Fisher–Yates).

**Judgement.** A segment passes only if the rebuilt checkpoint has the committed *checkpoint digest* (adapter,
optimizer state, RNG, sampler, accountant, log segment: every byte). Fields that do not depend on floating point
(batch commitment, example count, lr, noise index) must match in any environment: a mismatch there is a failure
even when the environment differs. When this machine cannot reproduce the recorded determinism settings (or the
worker reports it ran with others), a floating-point difference is *inconclusive*, with the relative weight
distance shown as information.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance.records import EXACT_FIELDS, AnyStepRecord

BEACON_LABEL = b"prov.beacon.v1"
DEFAULT_CONFIRMATIONS = 2


AUTO = "auto"  # --replay default: the subject's own last segment and half the others (rounded up)


def default_count(candidates: int) -> int:
    """How many segments `--replay auto` draws of `candidates`: the always-drawn last one plus half the others,
    rounded up (1 + ceil((n - 1) / 2)), so a forged earlier segment is caught with probability at least 1/2."""
    return 1 + math.ceil((candidates - 1) / 2) if candidates else 0


def choose_segments(seed: bytes, candidates: Sequence[int], count: int | None, *,
                    always: int | None = None) -> list[int]:
    """`count` distinct candidates (all when None) chosen by a partial Fisher–Yates shuffle driven by `seed`.

    `always` (the verified file's own last segment), when a candidate, is in every draw: it takes the first place
    and the rest are drawn from the other candidates, so swapped or stolen final weights are always re-run."""
    pool = list(candidates)
    take = len(pool) if count is None else min(count, len(pool))
    start = 0
    if always is not None and always in pool and take > 0:
        k = pool.index(always)
        pool[0], pool[k] = pool[k], pool[0]
        start = 1
    for i in range(start, take):
        draw = hashlib.sha256(seed + i.to_bytes(4, "big")).digest()
        j = i + int.from_bytes(draw[:8], "big") % (len(pool) - i)
        pool[i], pool[j] = pool[j], pool[i]
    return sorted(pool[:take])


@dataclass(frozen=True)
class Beacon:
    seed: bytes
    block: int | None
    block_hash: str | None
    auditor_seed: str | None
    confirmations: int
    seed_origin: str | None = None  # "given" (--beacon) or "drawn" (by this verifier, at random)

    @property
    def source(self) -> str:
        if self.block is not None and self.auditor_seed is not None:
            return "chain+auditor"
        return "chain" if self.block is not None else "auditor"

    def to_json(self) -> dict[str, Any]:
        return {"block": self.block, "hash": self.block_hash, "auditor_seed": self.auditor_seed,
                "auditor_seed_origin": self.seed_origin, "confirmations": self.confirmations, "source": self.source}


def make_beacon(*, block: tuple[int, bytes] | None, auditor_seed: str | None, confirmations: int,
                seed_origin: str | None = None) -> Beacon:
    """The seed of the segment draw: `SHA-256("prov.beacon.v1" || 0x00 || block hash || 0x00 || auditor seed)`."""
    material = BEACON_LABEL + b"\x00" + (block[1] if block else b"") + b"\x00" + (auditor_seed or "").encode()
    return Beacon(hashlib.sha256(material).digest(), block[0] if block else None,
                  "0x" + block[1].hex() if block else None, auditor_seed, confirmations,
                  None if auditor_seed is None else seed_origin)


def drawn_seed() -> str:
    """32 random bytes (hex) from the operating system: the auditor seed when none is given."""
    import secrets

    return secrets.token_hex(32)


def catch_probability(chosen: int, candidates: int, *, forced: bool = False) -> float | None:
    """Probability that a sample of `chosen` of `candidates` segments includes one given forged segment. With
    `forced` (one segment, the file's own last, is always in the sample) it is the worst case over the others:
    (chosen - 1) / (candidates - 1), and 1 when every segment is drawn."""
    if candidates == 0:
        return None
    if chosen >= candidates:
        return 1.0
    if forced:
        return (chosen - 1) / (candidates - 1)
    return chosen / candidates


def first_divergence(logged: Sequence[AnyStepRecord], replayed: Sequence[AnyStepRecord],
                     fields: Sequence[str]) -> dict[str, Any] | None:
    """The first step and field (of `fields`) where replayed records differ from the logged ones."""
    for old, new in zip(logged, replayed, strict=False):
        for name in fields:
            a, b = getattr(old, name, None), getattr(new, name, None)
            if a != b and not (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)):
                return {"step": old.step, "field": name, "expected": str(a), "found": str(b)}
    if len(logged) != len(replayed):
        return {"step": min(len(logged), len(replayed)), "field": "steps", "expected": str(len(logged)),
                "found": str(len(replayed))}
    return None


def exact_divergence(logged: Sequence[AnyStepRecord], replayed: Sequence[AnyStepRecord]) -> dict[str, Any] | None:
    """Divergence in a field that does not depend on floating point (a failure in any environment)."""
    return first_divergence(logged, replayed, EXACT_FIELDS)


def all_fields(record: AnyStepRecord) -> list[str]:
    return [name for name in record.to_json() if name not in ("format", "step")]


def weight_distance(replayed: Path, committed: bytes) -> float | None:
    """Relative L2 distance between two adapters' tensors (information only, for inconclusive replays)."""
    try:
        import numpy as np

        from provenance.safetensors import read_tensors
    except ImportError:
        return None
    a, b = read_tensors(replayed.read_bytes()), read_tensors(committed)
    if set(a) != set(b):
        return None
    num = sum(float(np.sum((a[k].astype(np.float64) - b[k].astype(np.float64)) ** 2)) for k in a)
    den = sum(float(np.sum(b[k].astype(np.float64) ** 2)) for k in b) or 1.0
    return math.sqrt(num / den)
