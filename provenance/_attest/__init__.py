"""Internals of auditor attestations: BLS on BN254, key files, statements, the contract client, in-toto."""
