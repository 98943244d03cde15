"""Revert decoding in every shape a backend reports it, value conversions, keys — no chain needed."""

from __future__ import annotations

import json
import os
import re
import socket
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import keccak

from provenance import chain
from provenance._chain import artifact, keys
from provenance._chain.errors import REVERT_CLASSES, V1_REVERT_CLASSES, RevertDecoder
from provenance.errors import ChainError, UsageError

RUN = bytes.fromhex("ab" * 32)
DECODER = RevertDecoder(artifact.load().errors(), REVERT_CLASSES)
V1_DECODER = RevertDecoder(artifact.load(artifact.V1_ARTIFACT_NAME).errors(), V1_REVERT_CLASSES)


def payload(signature: str, types: list[str], values: list[Any]) -> bytes:
    return keccak(text=signature)[:4] + encode(types, values)


NON_SEQUENTIAL = payload("ProvenanceRegistryNonSequentialIndex(bytes32,uint64,uint64)",
                         ["bytes32", "uint64", "uint64"], [RUN, 4, 2])


def test_every_custom_error_in_the_abi_has_a_python_class() -> None:
    abi_names = {e["name"] for e in artifact.load().errors()}
    assert abi_names == {cls.solidity for cls in REVERT_CLASSES}
    assert len(abi_names) == 13  # version 3 added NoCheckpoint
    v1_names = {e["name"] for e in artifact.load(artifact.V1_ARTIFACT_NAME).errors()}
    assert v1_names == {cls.solidity for cls in V1_REVERT_CLASSES}
    assert len(v1_names) == 14


class _Wrapped(Exception):
    pass


def _eth_tester_shape() -> Exception:
    # web3's tester provider re-raises eth-tester's failure with a bytes repr in the message, the raw bytes
    # only on the exception it was raised while handling.
    try:
        try:
            raise _Wrapped(NON_SEQUENTIAL)
        except _Wrapped as inner:
            raise RuntimeError(f"execution reverted: {inner.args[0]!r}") from None
    except RuntimeError as outer:
        outer.__cause__ = None
        return outer


class _WithData(Exception):
    def __init__(self, message: str, data: Any) -> None:
        super().__init__(message)
        self.data = data


@pytest.mark.parametrize("exc", [
    _WithData("execution reverted", "0x" + NON_SEQUENTIAL.hex()),  # web3 ContractCustomError (anvil)
    Exception({"code": 3, "message": "execution reverted", "data": "0x" + NON_SEQUENTIAL.hex()}),  # raw JSON-RPC
    Exception({"code": -32603, "message": "Error: VM Exception while processing transaction",  # Hardhat node
               "data": {"message": "reverted with custom error", "data": "0x" + NON_SEQUENTIAL.hex()}}),
    Exception("execution reverted: " + repr(NON_SEQUENTIAL)),  # eth-tester message only
], ids=["web3-data", "json-rpc", "hardhat-nested", "eth-tester-message"])
def test_revert_is_decoded_from_every_backend_shape(exc: Exception) -> None:
    decoded = DECODER.from_exception(exc)
    assert isinstance(decoded, chain.NonSequentialIndex)
    assert decoded.values == {"runKey": RUN, "expected": 4, "given": 2}
    assert (decoded.run_key, decoded.expected, decoded.given, decoded.already_committed) == (RUN, 4, 2, True)
    assert str(decoded) == (f"run {RUN.hex()}: the next checkpoint index is 4, not 2 (checkpoint 2 is already "
                            "committed; retries can pass idempotent=True)")


def test_revert_hidden_in_a_chained_exception() -> None:
    decoded = DECODER.from_exception(_eth_tester_shape())
    assert isinstance(decoded, chain.NonSequentialIndex) and decoded.given == 2


def test_errors_other_than_the_registry_s() -> None:
    reason = payload("Error(string)", ["string"], ["plain revert"])
    panic = payload("Panic(uint256)", ["uint256"], [0x11])
    assert str(DECODER.decode(reason)) == "the contract reverted: plain revert"
    assert str(DECODER.decode(panic)) == "the contract reverted: panic 0x11"
    assert DECODER.decode(bytes.fromhex("deadbeef") + bytes(32)) is None
    assert DECODER.decode(NON_SEQUENTIAL[:20]) is None  # truncated: not decodable, not a crash
    assert DECODER.from_exception(Exception("connection reset")) is None


@pytest.mark.parametrize("version", [2, 1])
def test_every_error_message_is_one_line_with_its_values(version: int) -> None:
    addr = "0x" + "11" * 20
    samples = {"bytes32": RUN, "address": addr, "uint64": 7, "uint256": 9, "bytes24": b"\x01" * 24}
    decoder, name = (DECODER, artifact.ARTIFACT_NAME) if version == 2 else (V1_DECODER, artifact.V1_ARTIFACT_NAME)
    for item in artifact.load(name).errors():
        types = [i["type"] for i in item["inputs"]]
        data = payload(f"{item['name']}({','.join(types)})", types, [samples[t] for t in types])
        decoded = decoder.decode(data, tx_hash="0xfeed")
        assert decoded is not None and decoded.solidity == item["name"]
        message = str(decoded)
        assert "\n" not in message and message.endswith("(transaction 0xfeed)"), message
        if "bytes32" in types:
            assert RUN.hex() in message, message
        if "address" in types:
            assert addr.lower() in message.lower(), message
        for arg in item["inputs"]:  # every value is also an attribute, in snake case
            snake = re.sub(r"(?<!^)(?=[A-Z])", "_", arg["name"]).lower()
            assert getattr(decoded, snake) == decoded.values[arg["name"]]


@pytest.mark.parametrize(("epsilon", "micro"), [
    (0.1, 100_000),  # 0.1 * 1e6 is 100000.00000000001 in binary floating point: still exactly 100000
    (0.5, 500_000),
    (1e-7, 1),  # rounded up: a claim never understates ε
    (1.0000001, 1_000_001),
    (0, 0),
    (8, 8_000_000),
    (None, chain.EPSILON_NOT_PRIVATE),
    (float("inf"), chain.EPSILON_NOT_PRIVATE),
])
def test_epsilon_fixed_point(epsilon: float | None, micro: int) -> None:
    assert chain.epsilon_to_micro(epsilon) == micro
    if micro not in (chain.EPSILON_NOT_PRIVATE, 1, 1_000_001):
        assert chain.epsilon_from_micro(micro) == epsilon
    assert chain.epsilon_from_micro(chain.EPSILON_NOT_PRIVATE) == float("inf")


@pytest.mark.parametrize("bad", [-0.1, float("nan"), 2e13])
def test_epsilon_out_of_range(bad: float) -> None:
    with pytest.raises(UsageError):
        chain.epsilon_to_micro(bad)


def test_run_ids() -> None:
    assert chain.parse_run_id(RUN.hex()) == chain.parse_run_id("0x" + RUN.hex()) == chain.parse_run_id(RUN) == RUN
    for bad in ("ab" * 31, "zz" * 32, b"\x01" * 31):
        with pytest.raises(UsageError):
            chain.parse_run_id(bad)
    assert len({chain.new_run_id() for _ in range(10)}) == 10


def test_keystore_round_trip_and_wrong_password(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    key = os.urandom(32)
    path = tmp_path / "key.json"
    address = keys.write_keystore(path, key, "correct horse", scrypt_n=2**10)  # fast KDF for the test
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert key.hex() not in path.read_text()
    monkeypatch.setenv(keys.ENV_KEYSTORE_PASSWORD, "correct horse")
    signer = keys.resolve(keystore=path)
    assert signer.address == address and bytes(signer.account.key) == key
    assert key.hex() not in repr(signer) and address in repr(signer)
    monkeypatch.setenv(keys.ENV_KEYSTORE_PASSWORD, "wrong")
    with pytest.raises(chain.SignerError, match="wrong password"):
        keys.resolve(keystore=path)
    monkeypatch.delenv(keys.ENV_KEYSTORE_PASSWORD)
    with pytest.raises(chain.SignerError, match=keys.ENV_KEYSTORE_PASSWORD):
        keys.resolve(keystore=path)
    (tmp_path / "junk.json").write_text(json.dumps({"not": "a keystore"}))
    with pytest.raises(chain.SignerError, match=re.escape("junk.json")):
        keys.from_keystore(tmp_path / "junk.json", "x")


def test_key_sources_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    env_key = os.urandom(32)
    monkeypatch.delenv(keys.ENV_KEY, raising=False)
    with pytest.raises(chain.SignerError, match="no signing key"):
        keys.resolve(chain_id=1)
    local = keys.resolve(chain_id=keys.LOCAL_CHAIN_ID)
    assert local.address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # anvil/Hardhat dev account 0
    assert "local chains only" in local.source
    monkeypatch.setenv(keys.ENV_KEY, "0x" + env_key.hex())
    from_env = keys.resolve(chain_id=keys.LOCAL_CHAIN_ID)
    assert bytes(from_env.account.key) == env_key and from_env.source == f"${keys.ENV_KEY}"
    assert env_key.hex() not in repr(from_env)
    monkeypatch.setenv(keys.ENV_KEY, "not-a-key")
    with pytest.raises(chain.SignerError, match=r"\$PROV_PRIVATE_KEY is not a valid"):
        keys.resolve(chain_id=1)


def test_unreachable_rpc_is_one_line() -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(chain.RpcUnreachable) as caught:
        chain.connect(f"http://127.0.0.1:{port}", use_config=False)
    message = str(caught.value)
    assert message.startswith(f"cannot reach the chain at http://127.0.0.1:{port}: connection refused")
    assert "\n" not in message and isinstance(caught.value, ChainError)


def test_unsupported_url_scheme() -> None:
    with pytest.raises(UsageError, match="unsupported RPC URL"):
        chain.connect("ftp://example.invalid", use_config=False)


def test_project_config_supplies_url_registry_and_chain_id(tmp_path: Any) -> None:
    from provenance import config

    config.update_section("chain", {"rpc_url": "tester"}, tmp_path)
    assert chain.connect(home=tmp_path).transport.rpc_url == "tester"
    config.update_section("chain", {"rpc_url": "http://127.0.0.1:9"}, tmp_path)
    with pytest.raises(chain.RpcUnreachable, match=re.escape("127.0.0.1:9")):
        chain.connect(home=tmp_path)


def test_the_chain_client_never_imports_the_workflows_above_it() -> None:
    """provenance.chain and provenance._chain/* import neither provenance.devchain nor (the internals) provenance.chain:
    checked on every import statement, including those inside functions."""
    import ast
    from pathlib import Path

    import provenance

    root = Path(provenance.__file__).parent
    files = [root / "chain.py", *sorted((root / "_chain").glob("*.py"))]
    for path in files:
        forbidden = {"provenance.devchain"} | ({"provenance.chain"} if path.parent.name == "_chain" else set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            bad = [n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden)]
            assert not bad, f"{path.name} line {node.lineno} imports {bad}"


@pytest.mark.parametrize(("answer", "known"), [
    ("{'code': -32000, 'message': 'already known'}", True),  # geth, erigon
    ("known transaction: 0x5f1c", True),  # parity-style
    ("Transaction already imported", True),  # besu
    ("Unknown transaction type", False),  # py-evm's refusal of a typed transaction: a real error
    ("nonce too low", False),
])
def test_a_resend_the_node_already_holds_is_told_apart(answer: str, known: bool) -> None:
    from provenance._chain.transport import ALREADY_KNOWN

    assert bool(ALREADY_KNOWN.search(answer.lower())) is known


def test_a_configured_key_that_does_not_open_is_never_replaced_by_another_owner(
        isolated_state: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A keystore given with the wrong password: the run's owner cannot be the keystore's account, and must not
    silently become the local chain's dev account (a later flush with the right key would then be refused)."""
    from provenance.config import update_section
    from training.anchoring import expected_owner
    from training.config import AnchorConfig

    update_section("chain", {"rpc_url": "http://127.0.0.1:8545", "chain_id": 31337}, home=isolated_state)
    assert expected_owner(AnchorConfig()) == keys.dev_signer(0).address  # no key given: the local dev account
    store = tmp_path / "k.json"
    keys.write_keystore(store, b"\x11" * 32, "right", scrypt_n=2)
    monkeypatch.setenv("PROV_KEYSTORE", str(store))
    monkeypatch.setenv("PROV_KEYSTORE_PASSWORD", "wrong")
    with pytest.raises(UsageError, match="wrong password") as info:
        expected_owner(AnchorConfig())
    assert "\n" not in str(info.value) and "right" not in str(info.value)
    monkeypatch.setenv("PROV_KEYSTORE_PASSWORD", "right")
    assert expected_owner(AnchorConfig()) == keys.from_keystore(store).address
