"""Small crash-safe file helpers shared by every module that persists state."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from provenance.errors import ProvenanceError, UsageError


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, mode: int = 0o644, durable: bool = True,
                  suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """A binary file to write that appears at `path` only when the block ends without error: readers see either
    the old file or the whole new one, never a mix; on error the temp file beside it is removed.

    The file gets exactly `mode` before any byte is written (the process umask is not read: changing it to read it
    would race other threads): pass 0o600 for secrets, which are then never readable by others, even briefly.
    With `durable`, the data and the rename are fsynced.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)  # created 0600
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            yield out
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, target)
        if durable:
            fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike[str], data: bytes, *, durable: bool = True, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically (see `atomic_output`)."""
    with atomic_output(path, mode=mode, durable=durable) as out:
        out.write(data)


def read_input(path: Path, *, missing: str = "no such file", unreadable: str = "cannot read",
               error: type[ProvenanceError] = UsageError) -> bytes:
    """A whole (small) file the user named; a missing or unreadable one is one line naming the path, of type
    `error`: `PATH: <missing>` or `PATH: <unreadable> (<reason>)` (say there how to make the file if it helps)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except OSError as exc:
        raise error(f"{path}: {unreadable} ({exc.strerror or exc})") from None


@contextlib.contextmanager
def open_input(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a file for reading (unbuffered); errors *opening* it become one-line UsageErrors naming the path.
    Errors inside the `with` body (e.g. a full disk while storing what is read) pass through unchanged."""
    p = Path(path)
    try:
        stream = p.open("rb", buffering=0)
    except IsADirectoryError:
        raise UsageError(f"{p} is a directory, not a file") from None
    except FileNotFoundError:
        raise UsageError(f"{p}: no such file") from None
    except PermissionError:
        raise UsageError(f"{p}: permission denied") from None
    except OSError as exc:
        raise UsageError(f"{p}: cannot read ({exc.strerror or exc})") from None
    with stream:
        yield stream
