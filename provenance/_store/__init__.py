"""Internals of the artifact store: UnixFS/dag-pb codecs and builders, DAG walking, and the backends."""
