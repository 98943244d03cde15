"""The `prov` command line. Thin: each command parses options, calls one library function and prints.

Errors: a `ProvenanceError` prints one line `prov: error: ...` to stderr and exits with its exit code
(1 = a check failed, 2 = could not run). `--debug` (anywhere on the command line) shows the traceback instead.
Command groups live in sibling modules (`chain`, `store`, `train`, ...), each exposing `COMMANDS`; they import
heavy libraries (web3, torch) inside the command functions so `prov --version` stays fast.
"""

from __future__ import annotations

import errno
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

import click

from provenance import __version__
from provenance.canonical import escape_controls
from provenance.errors import ProvenanceError

# Sibling modules that contribute commands. Each defines COMMANDS: list[click.Command].
_COMMAND_MODULES = ("core", "chain", "store", "anchor", "verify", "attest", "proofs", "merge", "bundle")
# Commands other parts of prov contribute (the trainer's `train`, `init-model`, `demo`): found by entry point, so
# the library never imports the trainer. Only prov's own distribution may add commands.
_ENTRY_POINT_GROUP = "prov.commands"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="prov")
def cli() -> None:
    """prov: verifiable training provenance for fine-tuned language models.

    Add --debug anywhere to see a traceback instead of a one-line error.
    """


def _register() -> None:
    for name in _COMMAND_MODULES:
        qualified = f"{__name__}.{name}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as exc:
            if exc.name == qualified:  # that command group is not part of this build
                continue
            raise
        for command in module.COMMANDS:
            cli.add_command(command)
    for entry in sorted(entry_points(group=_ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        if entry.dist is None or entry.dist.name != "prov":
            continue
        for command in importlib.import_module(entry.value).COMMANDS:
            cli.add_command(command)


_register()


# A command whose results are all written and made durable when it returns (`prov train`) may ask the process entry
# point to skip the interpreter's final teardown: freeing torch/transformers/web3 object graphs module by module
# took ~1.7 s of CPU (~3 s wall on a loaded machine) after `prov train` on the tiny model had finished its work.
_fast_exit = False


def request_fast_exit() -> None:
    """Let `main()`, when it is the process entry point (argv from sys.argv), end the process right after the
    command: non-daemon threads are joined and atexit handlers run as at a normal exit, stdout/stderr are flushed,
    then `os._exit` skips only the teardown. Callers that pass argv (tests, embedding) are never cut short."""
    global _fast_exit
    _fast_exit = True


def main(argv: Sequence[str] | None = None) -> int:
    code = _main(argv)
    if argv is None and _fast_exit:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End the process as a normal exit would, minus the interpreter's teardown (see `request_fast_exit`)."""
    import atexit
    import os
    import threading

    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120  # what Python itself returns when flushing stdout at exit fails
    os._exit(code)


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        # Without standalone mode click *returns* the code of a `click.exceptions.Exit` raised by a command.
        code = cli.main(args=args, prog_name="prov", standalone_mode=False)
        if isinstance(code, int):
            return code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("prov: aborted", err=True)
        return 130
    except click.ClickException as exc:
        if debug:
            raise
        exc.show()
        return 2
    except ProvenanceError as exc:
        if debug:
            raise
        click.echo(f"prov: error: {_one_line(str(exc))}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("prov: interrupted", err=True)
        return 130
    except OSError as exc:  # the machine refused (full disk, permissions, over-long name): say where and what to do
        if debug:
            raise
        click.echo(f"prov: error: {_one_line(_os_error(exc))}", err=True)
        return 2
    except RecursionError:
        if debug:
            raise
        click.echo("prov: error: input nested too deeply to read (hostile or corrupt JSON?); rerun with --debug "
                   "to see which", err=True)
        return 2
    except Exception as exc:  # an unexpected failure still gets one line; --debug shows where
        if debug:
            raise
        click.echo(
            f"prov: internal error: {type(exc).__name__}: {_one_line(str(exc))} (rerun with --debug for a traceback)",
            err=True,
        )
        return 2
    return 0


def _one_line(text: str) -> str:
    """One line, with any control or bidi character a trainer-supplied string carried shown as an escape."""
    return escape_controls(" ".join(text.split()))


_OS_HINTS = {
    errno.ENOSPC: "free space on that disk, or point TMPDIR / the destination elsewhere",
    errno.EDQUOT: "free space on that disk, or point TMPDIR / the destination elsewhere",
    errno.EACCES: "check its permissions, or choose a path you may use",
    errno.EPERM: "check its permissions, or choose a path you may use",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.EROFS: "choose a writable location",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "check the path",
    errno.EISDIR: "give a file, not a directory",
}


def _os_error(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else "a file"
    reason = exc.strerror or type(exc).__name__
    return f"{where}: {reason}; {_OS_HINTS.get(exc.errno or 0, 'check the path and the disk')}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
