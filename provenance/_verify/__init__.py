"""Internals of `provenance.verify`: the check bookkeeping, the privacy recomputation, and replay."""
