"""`prov store ...`: commands over the local store, their output, exit codes and one-line errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from provenance.cli import main
from provenance.store import bytes_cid, directory_cid, file_cid
from tests.fixtures.ipfs import make_sample_tree, tree_snapshot


@pytest.fixture(autouse=True)
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("PROV_HOME", str(home))
    return home


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["store", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_put_get_ls_for_a_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path, project: Path) -> None:
    tree = make_sample_tree(tmp_path / "ckpt")
    code, out, _ = run(capsys, "put", str(tree))
    cid = directory_cid(tree)
    assert code == 0 and out == f"{cid}\n"
    assert (project / "store" / "pins" / cid).exists()  # the project's state dir holds the local store
    code, out, _ = run(capsys, "ls")
    assert code == 0 and out.split() == [cid]
    code, out, _ = run(capsys, "ls", cid)
    assert code == 0 and f"{file_cid(tree / 'state.json')} state.json" in out.splitlines()
    code, _, err = run(capsys, "get", cid, str(tmp_path / "back"))
    assert code == 0 and "verified" in err
    assert tree_snapshot(tmp_path / "back") == tree_snapshot(tree)


def test_put_get_file_and_cid(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = tmp_path / "m.json"
    source.write_bytes(b'{"version": 1}\n')
    code, out, _ = run(capsys, "cid", str(source))
    assert code == 0 and out.strip() == bytes_cid(source.read_bytes())
    assert run(capsys, "ls")[1] == ""  # `cid` stores nothing
    code, out, _ = run(capsys, "put", str(source))
    assert out.strip() == bytes_cid(source.read_bytes())
    code, _, _ = run(capsys, "get", out.strip(), str(tmp_path / "copy.json"))
    assert code == 0 and (tmp_path / "copy.json").read_bytes() == source.read_bytes()


def test_pin_unpin_gc(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"data")
    cid = run(capsys, "put", "--no-pin", str(source))[1].strip()
    assert run(capsys, "ls")[1] == ""
    assert run(capsys, "pin", cid)[0] == 0 and run(capsys, "ls")[1].strip() == cid
    assert run(capsys, "unpin", cid)[0] == 0
    code, out, _ = run(capsys, "gc")
    assert code == 0 and out.strip() == "removed 1 blocks"
    code, _, err = run(capsys, "unpin", cid)
    assert code == 2 and err.startswith("prov: error:") and "not pinned" in err


def test_export_import_between_stores(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tree = make_sample_tree(tmp_path / "ckpt")
    cid = run(capsys, "put", str(tree))[1].strip()
    car_path = tmp_path / "ckpt.car"
    code, _, err = run(capsys, "export", cid, str(car_path))
    assert code == 0 and "blocks" in err
    other = f"local:{tmp_path / 'other'}"
    code, out, _ = run(capsys, "--store", other, "import", str(car_path))
    assert code == 0 and out.strip() == cid
    assert run(capsys, "--store", other, "ls")[1].strip() == cid


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("get", "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", "x"), "not found"),
        (("get", "not-a-cid", "x"), "not a CID"),
        (("pin", "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"), "not found"),
        (("--store", "nowhere:x", "ls"), "unknown store"),
        (("--store", "kubo:/ip4/1.2.3/tcp/1", "ls"), "bad IPFS API multiaddr"),
    ],
)
def test_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str], args: tuple[str, ...], fragment: str) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("prov: error:") and fragment in err


def test_unreachable_daemon(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = run(capsys, "--store", f"kubo:http://127.0.0.1:{port}", "--timeout", "2", "ls")
    assert code == 2 and "cannot reach the IPFS API" in err and err.count("\n") == 1


def test_truncated_car_and_tampered_block(capsys: pytest.CaptureFixture[str], tmp_path: Path, project: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x" * 1000)
    cid = run(capsys, "put", str(source))[1].strip()
    run(capsys, "export", cid, str(tmp_path / "f.car"))
    (tmp_path / "cut.car").write_bytes((tmp_path / "f.car").read_bytes()[:-10])
    code, _, err = run(capsys, "import", str(tmp_path / "cut.car"))
    assert code == 2 and "truncated CAR file" in err
    (project / "store" / "blocks" / cid[-3:-1] / cid).write_bytes(b"y" * 1000)
    code, _, err = run(capsys, "get", cid, str(tmp_path / "out"))
    assert code == 1 and "does not match its CID" in err and cid in err  # a failed check exits 1
    assert not (tmp_path / "out").exists()
