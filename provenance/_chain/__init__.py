"""Internals of the registry client (`provenance.chain`): the shipped artifact, typed errors and revert decoding,
signing keys, transaction sending, record decoding and the local anvil process. Import `provenance.chain`."""
