"""The compiled ProvenanceRegistry shipped inside the package, so a `pip install` user needs no Node or solc.

`scripts/compile.js` writes it from `contracts/`; `scripts/check-artifact` (CI) fails if it differs from a fresh
compile. Its metadata-free runtime bytecode is also how the client recognises a registry at an address.
`ProvenanceRegistryV1.json` and `ProvenanceRegistryV2.json` are frozen older versions (their sources were replaced),
kept to read old deployments (version 2 is also still written: its functions are version 3's).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from provenance.errors import ChainError

ARTIFACT_NAME = "ProvenanceRegistry.json"
V1_ARTIFACT_NAME = "ProvenanceRegistryV1.json"
V2_ARTIFACT_NAME = "ProvenanceRegistryV2.json"


@dataclass(frozen=True)
class Artifact:
    abi: list[dict[str, Any]]
    bytecode: bytes
    deployed_bytecode: bytes
    compiler_version: str

    def errors(self) -> list[dict[str, Any]]:
        """The ABI entries of the contract's custom errors."""
        return [item for item in self.abi if item.get("type") == "error"]


@functools.cache
def load(name: str = ARTIFACT_NAME) -> Artifact:
    """Load and check a shipped artifact (default: the current registry) once per process."""
    path = resources.files("provenance") / "contracts" / name
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        return Artifact(
            abi=value["abi"],
            bytecode=bytes.fromhex(value["bytecode"].removeprefix("0x")),
            deployed_bytecode=bytes.fromhex(value["deployedBytecode"].removeprefix("0x")),
            compiler_version=value["compiler"]["version"],
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ChainError(f"the packaged registry artifact {name} is missing or corrupt ({exc}); "
                         "reinstall prov") from None
