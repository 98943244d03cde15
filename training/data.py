"""The bundled demo dataset. Loading, tokenization and batches live in `provenance.dataset` and
`provenance.batches` (no torch), so the verifier rebuilds exactly what the trainer fed."""

from __future__ import annotations

from pathlib import Path

DEMO_DATA = Path(__file__).parent / "data" / "demo.jsonl"
