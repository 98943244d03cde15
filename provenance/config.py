"""The project state directory and the project config.

One directory (default `./.prov`, or the nearest `.prov` in a parent directory, overridable by `PROV_HOME`)
holds the project config (`config.json`), the local artifact store (`store/`), local chain state (`chain/`) and
training runs (`runs/`), so every `prov` command run later finds what earlier ones made.

`config.json` is machine-written canonical JSON: `{"version": 1, "chain": {...}, "store": {...}}`. Each part
of prov owns one section; `update_section` rewrites the file atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from provenance import canonical
from provenance.errors import ConfigError, FormatError
from provenance.fsutil import atomic_write

STATE_DIR_NAME = ".prov"
CONFIG_NAME = "config.json"
CONFIG_VERSION = 1
ENV_HOME = "PROV_HOME"


def state_dir(start: Path | None = None) -> Path:
    """The project state directory: `$PROV_HOME`, else the nearest existing `.prov` at or above `start`
    (default: the working directory), else `<start>/.prov` (created on first write)."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / STATE_DIR_NAME).is_dir():
            return candidate / STATE_DIR_NAME
    return here / STATE_DIR_NAME


def subdir(name: str, *, home: Path | None = None, create: bool = True) -> Path:
    """A named part of the state directory (`store`, `chain`, `runs`, ...)."""
    path = (home or state_dir()) / name
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def load_config(home: Path | None = None) -> dict[str, Any]:
    """The project config; an empty one if none was written yet. Malformed JSON is a one-line ConfigError."""
    path = (home or state_dir()) / CONFIG_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {"version": CONFIG_VERSION}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read project config ({exc.strerror})") from None
    try:
        value = canonical.load_json(raw, source=str(path))
    except FormatError as exc:
        raise ConfigError(f"{exc}; fix or delete the project config") from None
    if not isinstance(value, dict) or value.get("version") != CONFIG_VERSION:
        raise ConfigError(f"{path}: not a prov project config (expected an object with \"version\": 1)")
    return value


def get_section(name: str, home: Path | None = None) -> dict[str, Any]:
    section = load_config(home).get(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"project config section {name!r} must be an object")
    return section


def update_section(name: str, values: dict[str, Any], home: Path | None = None) -> dict[str, Any]:
    """Merge `values` into section `name` and write the config atomically. Returns the new section."""
    root = home or state_dir()
    config = load_config(root)
    section = dict(config.get(name, {}))
    section.update(values)
    config[name] = section
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(root / CONFIG_NAME, canonical.encode(config) + b"\n")
    return section
