"""The Kubo-RPC backend, cross-checked against a real daemon (npm ipfs@0.66.1, offline on loopback).

Tests marked `ipfs` use the session daemon from tests/fixtures/ipfs.py; the rest exercise address parsing and
error mapping without one.
"""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from provenance import car
from provenance._store.kubo import KuboStore, to_multiaddr
from provenance._store.local import LocalStore
from provenance.cid import parse_cid
from provenance.errors import ProvenanceError
from provenance.store import (
    BlockNotFound,
    CidMismatch,
    NotPinned,
    StoreAddressError,
    StoreUnavailable,
    UnexpectedCid,
    bytes_cid,
    directory_cid,
    file_cid,
    open_store,
)
from tests.fixtures.ipfs import IpfsDaemon, make_sample_tree, tree_snapshot
from tests.fixtures.store import (
    KNOWN_1K_CHUNK_CIDS,
    KNOWN_FILE_CIDS,
    SMALL_CHUNK,
    chunked_cid,
    kat_data,
)

# The daemon's own `ipfs add --cid-version=1 --raw-leaves`; `only-hash` computes the CID without storing blocks
# (storing tens of thousands of 1 KiB blocks would take the daemon minutes).
ADD = {"cid-version": 1, "raw-leaves": "true", "cid-base": "base32", "pin": "false", "only-hash": "true"}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the same bytes get the same CID from our code, the local store and the daemon ------------------------


@pytest.mark.ipfs
@pytest.mark.parametrize("size", sorted(KNOWN_FILE_CIDS))
def test_known_answers_from_daemon_local_and_kubo_store(
    size: int, ipfs_client: Any, kubo_store: KuboStore, tmp_path: Path
) -> None:
    content = kat_data(size)
    daemon = ipfs_client.add_bytes(content, opts={**ADD, "chunker": "size-262144"})
    assert daemon == KNOWN_FILE_CIDS[size] == bytes_cid(content)
    assert LocalStore(tmp_path / "local").put_bytes(content) == daemon
    assert kubo_store.put_bytes(content, pin=False) == daemon


@pytest.mark.ipfs
@pytest.mark.parametrize("size", sorted(KNOWN_1K_CHUNK_CIDS))
def test_three_level_trees_match_daemon(size: int, ipfs_client: Any) -> None:
    content = hashlib.shake_256(b"prov-kat").digest(size)
    daemon = ipfs_client.add_bytes(content, opts={**ADD, "chunker": f"size-{SMALL_CHUNK}"})
    assert daemon == KNOWN_1K_CHUNK_CIDS[size] == chunked_cid(content, SMALL_CHUNK)


@pytest.mark.ipfs
def test_files_and_directories_match_daemon_add(ipfs_client: Any, kubo_store: KuboStore, tmp_path: Path) -> None:
    tree = make_sample_tree(tmp_path / "ckpt")
    added = ipfs_client.add(str(tree), recursive=True, cid_version=1, raw_leaves=True, pin=False,
                            opts={"cid-base": "base32"})
    by_name = {entry["Name"]: entry["Hash"] for entry in added}
    assert by_name["ckpt"] == directory_cid(tree) == kubo_store.put_directory(tree)
    assert LocalStore(tmp_path / "local").put_directory(tree) == by_name["ckpt"]
    for name in ("adapter_model.safetensors", "optimizer.safetensors", "empty.bin", "rng/torch.bin"):
        assert by_name[f"ckpt/{name}"] == file_cid(tree / name) == kubo_store.put_file(tree / name)


# -- reads through the node are verified ------------------------------------------------------------------


@pytest.mark.ipfs
def test_round_trips_through_the_node(kubo_store: KuboStore, tmp_path: Path) -> None:
    tree = make_sample_tree(tmp_path / "ckpt")
    cid = kubo_store.put_directory(tree)
    assert kubo_store.has(cid)
    assert kubo_store.list_directory(cid)["state.json"] == file_cid(tree / "state.json")
    kubo_store.get_directory(cid, tmp_path / "back")
    assert tree_snapshot(tmp_path / "back") == tree_snapshot(tree)
    blob = kat_data(3 * 262_144 + 1)
    assert kubo_store.get_bytes(kubo_store.put_bytes(blob)) == blob


@pytest.mark.ipfs
def test_a_lying_node_is_caught(kubo_store: KuboStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from provenance import _http

    cid = kubo_store.put_bytes(b"the real content")
    monkeypatch.setattr(_http, "post", lambda *a, **k: _http.Answer(200, b"something else"))  # how reads fetch
    with pytest.raises(CidMismatch, match=cid):
        kubo_store.get_bytes(cid)


@pytest.mark.ipfs
def test_unknown_cid_fails_fast(kubo_store: KuboStore) -> None:
    unknown = bytes_cid(b"nobody has this " + str(time.time()).encode())
    started = time.monotonic()
    with pytest.raises(BlockNotFound, match=unknown):
        kubo_store.get_bytes(unknown)
    assert time.monotonic() - started < kubo_store.timeout + 3
    assert not kubo_store.has(unknown)


@pytest.mark.ipfs
def test_pins_and_gc_on_the_node(kubo_store: KuboStore) -> None:
    loose = kubo_store.put_bytes(b"loose " + str(time.time()).encode(), pin=False)
    assert loose not in kubo_store.pins()
    kubo_store.pin(loose)
    assert loose in kubo_store.pins()
    kubo_store.unpin(loose)
    with pytest.raises(NotPinned):
        kubo_store.unpin(loose)
    assert kubo_store.gc() >= 1
    assert not kubo_store.has(loose)


# -- CAR between the local store and the node, both ways --------------------------------------------------


@pytest.mark.ipfs
def test_car_local_to_node_and_back(kubo_store: KuboStore, tmp_path: Path) -> None:
    tree = make_sample_tree(tmp_path / "ckpt")
    local = LocalStore(tmp_path / "local")
    cid = local.put_directory(tree)
    local.export_car(cid, tmp_path / "out.car")
    assert kubo_store.import_car(tmp_path / "out.car") == [cid]
    assert cid in kubo_store.pins()
    kubo_store.export_car(cid, tmp_path / "back.car")
    fresh = LocalStore(tmp_path / "fresh")
    assert fresh.import_car(tmp_path / "back.car") == [cid]
    fresh.get_directory(cid, tmp_path / "restored")
    assert tree_snapshot(tmp_path / "restored") == tree_snapshot(tree)


@pytest.mark.ipfs
def test_daemon_dag_export_reads_with_our_reader(ipfs_client: Any, tmp_path: Path) -> None:
    content = kat_data(175 * 262_144 + 1)
    cid = ipfs_client.add_bytes(content, opts={**ADD, "chunker": "size-262144", "pin": "true", "only-hash": "false"})
    exported = tmp_path / "daemon.car"
    exported.write_bytes(ipfs_client.dag.export(cid))
    assert exported.read_bytes().startswith(car.encode_header([parse_cid(cid)]))  # same header bytes
    store = LocalStore(tmp_path / "local")
    assert store.import_car(exported) == [cid]
    assert store.get_bytes(cid, max_size=None) == content


@pytest.mark.ipfs
def test_incomplete_car_is_refused_before_the_node_sees_it(kubo_store: KuboStore, tmp_path: Path) -> None:
    local = LocalStore(tmp_path / "local")
    cid = local.put_bytes(kat_data(4 * 262_144) + str(time.time()).encode())
    local.export_car(cid, tmp_path / "full.car")
    roots, blocks = car.read_car(tmp_path / "full.car")
    car.write_car(tmp_path / "partial.car", roots, blocks[:-1])
    with pytest.raises(BlockNotFound, match="does not hold the whole DAG"):
        kubo_store.import_car(tmp_path / "partial.car")
    assert not kubo_store.has(cid)


# -- addresses and unreachable nodes (no daemon needed) ---------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/ip4/127.0.0.1/tcp/5001", "/ip4/127.0.0.1/tcp/5001"),
        ("http://127.0.0.1:5001", "/ip4/127.0.0.1/tcp/5001/http"),
        ("http://127.0.0.1:5001/api/v0", "/ip4/127.0.0.1/tcp/5001/http"),
        ("https://ipfs.example.org", "/dns/ipfs.example.org/tcp/443/https"),
        ("http://[::1]:5001", "/ip6/::1/tcp/5001/http"),
    ],
)
def test_api_addresses(given: str, expected: str) -> None:
    assert to_multiaddr(given) == expected


@pytest.mark.parametrize(
    "spec",
    ["kubo:/ip4/1.2.3/tcp/1", "kubo:/ip4/127.0.0.1", "kubo:/ip4/127.0.0.1/udp/5001", "kubo:ftp://host:1",
     "kubo:http://host:99999", "kubo:http://host:1/some/path", "kubo:not an address"],
)
def test_bad_addresses_are_one_line_errors(spec: str) -> None:
    with pytest.raises(StoreAddressError) as info:
        open_store(spec)
    assert "\n" not in str(info.value)


def test_unreachable_daemon_is_a_clear_error() -> None:
    store = open_store(f"kubo:/ip4/127.0.0.1/tcp/{closed_port()}", timeout=2)
    for call in (lambda: store.put_bytes(b"x"), lambda: store.pins(), lambda: store.get_bytes(bytes_cid(b"x"))):
        with pytest.raises(StoreUnavailable) as info:
            call()
        assert "cannot reach the IPFS API" in str(info.value) and "\n" not in str(info.value)


def test_node_answering_another_cid_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(f"kubo:/ip4/127.0.0.1/tcp/{closed_port()}")
    assert isinstance(store, KuboStore)
    removed: list[str] = []
    monkeypatch.setattr(store._client, "add_bytes", lambda data, **kw: "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn")
    monkeypatch.setattr(store._client.pin.__class__, "rm", lambda self, cid, **kw: removed.append(cid))
    with pytest.raises(UnexpectedCid, match="prov computes"):
        store.put_bytes(b"content")
    assert removed == ["bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"]  # unpinned again


@pytest.mark.parametrize("answer", [None, [], "text", {"Keys": ["not", "a", "map"]}, {"Keys": {"nope": {}}}])
def test_hostile_node_answers_are_one_line_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  answer: object) -> None:
    # The node is untrusted: whatever JSON it answers, the user sees a one-line StoreError, never a traceback.
    store = open_store(f"kubo:/ip4/127.0.0.1/tcp/{closed_port()}")
    assert isinstance(store, KuboStore)
    source = tmp_path / "f.bin"
    source.write_bytes(b"x")

    def deep(*args: object, **kwargs: object) -> object:
        raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")

    monkeypatch.setattr(store._client.pin.__class__, "ls", lambda self, **kw: answer)
    monkeypatch.setattr(store._client, "add", lambda *a, **kw: answer)
    monkeypatch.setattr(store._client.repo.__class__, "gc", lambda self, **kw: answer)
    monkeypatch.setattr(store._client, "add_bytes", deep)
    for call in (store.pins, lambda: store.put_file(source), lambda: store.put_directory(tmp_path),
                 lambda: store.put_bytes(b"x")):
        with pytest.raises(ProvenanceError) as info:
            call()
        assert "\n" not in str(info.value)
    assert store.gc() == 0


def test_daemon_fixture_reports_its_address(request: pytest.FixtureRequest) -> None:
    # Guard against the fixture module silently not loading: conftest must register it as a plugin.
    assert "ipfs_daemon" in request.fixturenames or request.config.pluginmanager.hasplugin("tests.fixtures.ipfs")
    assert IpfsDaemon(api="/ip4/127.0.0.1/tcp/1").pid is None
