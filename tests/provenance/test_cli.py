"""The `prov` command line: exit codes, one-line errors for bad input, --debug tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from provenance.cli import main
from tests.fixtures.records import write_log


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("prov, version ")


def test_hash_file_and_directory(capsys, tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    code, out, _ = run(capsys, "hash", str(tmp_path / "a"))
    assert code == 0 and out.startswith("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    code, out, _ = run(capsys, "hash", str(tmp_path), "--json")
    assert code == 0 and '"kind": "checkpoint"' in out


def test_missing_path_is_one_line_exit_2(capsys, tmp_path: Path) -> None:
    code, out, err = run(capsys, "hash", str(tmp_path / "nope"))
    assert code == 2 and out == "" and err.count("\n") == 1 and "no such file" in err


def test_log_verify_exit_codes(capsys, tmp_path: Path) -> None:
    write_log(tmp_path, 5).close()
    code, out, _ = run(capsys, "log", "verify", str(tmp_path))
    assert code == 0 and out.startswith("ok: 5 steps")
    log = tmp_path / "steps.jsonl"
    log.write_bytes(log.read_bytes().replace(b'"examples":3', b'"examples":4'))
    code, _, err = run(capsys, "log", "verify", str(tmp_path))
    assert code == 1 and "step 3 was altered" in err and err.count("\n") == 1
    code, _, err = run(capsys, "log", "verify", str(tmp_path / "missing"))
    assert code == 2


@pytest.mark.parametrize("content, message", [
    (b"\x80\x04\x95pickle", "pickle"),
    (b"PK\x03\x04zip-of-pickles", "pickle"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":", "truncated"),
    (b"\x02\x00\x00\x00\x00\x00\x00\x00{]", "not a safetensors file"),
    (b"abc", "too short"),
])
def test_verify_refuses_bad_files_before_any_network(capsys, tmp_path: Path, content: bytes, message: str) -> None:
    bad = tmp_path / "adapter.bin"
    bad.write_bytes(content)
    code, out, err = run(capsys, "verify", str(bad), "--rpc", "http://127.0.0.1:9", "--registry", "0x" + "11" * 20)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1


def test_verify_unreachable_node_is_one_line(capsys, tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    adapter = tmp_path / "adapter_model.safetensors"
    save_file({"w": np.zeros(2, dtype=np.float32)}, str(adapter))
    code, _, err = run(capsys, "verify", str(adapter), "--rpc", "http://127.0.0.1:9", "--registry", "0x" + "11" * 20)
    assert code == 2 and err.count("\n") == 1 and "127.0.0.1:9" in err


def test_debug_shows_a_traceback(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    plain = subprocess.run([sys.executable, "-m", "provenance", "hash", str(tmp_path / "nope")],
                           capture_output=True, text=True, env=env)
    debug = subprocess.run([sys.executable, "-m", "provenance", "hash", str(tmp_path / "nope"), "--debug"],
                           capture_output=True, text=True, env=env)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "UsageError" in debug.stderr
