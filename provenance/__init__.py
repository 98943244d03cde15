"""prov: verifiable training provenance for fine-tuned language models.

The core package never imports torch at import time: a verifier without replay installs light and starts fast.
"""

__version__ = "0.1.0"
