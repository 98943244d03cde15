"""The fault-injecting JSON-RPC proxy (tests/fixtures/rpcproxy.py) does what its docstring promises, on real anvil:
each fault fires exactly as many times as asked, and the proxy is transparent when no fault is on."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.fixtures.rpcproxy import CAP_ERROR_CODE, RpcProxy

pytestmark = pytest.mark.chain


def call(url: str, method: str, params: list[Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params or []}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def test_transparent_without_faults(rpc_proxy: RpcProxy) -> None:
    assert call(rpc_proxy.url, "eth_chainId")["result"] == rpc_proxy.rpc("eth_chainId")
    assert rpc_proxy.calls == [("eth_chainId", [])]


def test_status_fires_n_times_for_its_method(rpc_proxy: RpcProxy) -> None:
    rpc_proxy.status(429, n=2, method="eth_blockNumber")
    assert "result" in call(rpc_proxy.url, "eth_chainId")  # another method passes
    for _ in range(2):
        with pytest.raises(urllib.error.HTTPError) as err:
            call(rpc_proxy.url, "eth_blockNumber")
        assert err.value.code == 429
    assert "result" in call(rpc_proxy.url, "eth_blockNumber")


def test_drop_closes_without_answer(rpc_proxy: RpcProxy) -> None:
    rpc_proxy.drop(1, method="eth_chainId")
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        call(rpc_proxy.url, "eth_chainId")
    assert "result" in call(rpc_proxy.url, "eth_chainId")


def test_cap_logs_refuses_wide_ranges_like_providers(rpc_proxy: RpcProxy) -> None:
    rpc_proxy.mine(20)
    rpc_proxy.cap_logs(10)
    latest = rpc_proxy.block_number()
    wide = call(rpc_proxy.url, "eth_getLogs", [{"fromBlock": "0x0", "toBlock": "latest"}])
    assert wide["error"] == {"code": CAP_ERROR_CODE, "message": "query exceeds max block range 10"}
    narrow = call(rpc_proxy.url, "eth_getLogs", [{"fromBlock": hex(latest - 9), "toBlock": hex(latest)}])
    assert narrow["result"] == []
    assert rpc_proxy.log_ranges() == [(0, "latest"), (latest - 9, latest)]
    rpc_proxy.cap_logs(None)
    assert "result" in call(rpc_proxy.url, "eth_getLogs", [{"fromBlock": "0x0", "toBlock": "latest"}])


def test_override_and_omit_rewrite_answers(rpc_proxy: RpcProxy) -> None:
    rpc_proxy.override("eth_chainId", lambda params, result: "0x1")
    assert call(rpc_proxy.url, "eth_chainId")["result"] == "0x1"
    rpc_proxy.omit_logs(lambda log: True)
    assert call(rpc_proxy.url, "eth_getLogs", [{"fromBlock": "0x0", "toBlock": "latest"}])["result"] == []
    rpc_proxy.clear()
    assert call(rpc_proxy.url, "eth_chainId")["result"] != "0x1"


def test_reorg_replaces_blocks(rpc_proxy: RpcProxy) -> None:
    rpc_proxy.mine(2)
    # the replaced block holds a transaction: its empty replacement cannot have the same hash (two empty blocks
    # mined in the same second can)
    account = rpc_proxy.rpc("eth_accounts", [])[0]
    sent = rpc_proxy.rpc("eth_sendTransaction", [{"from": account, "to": account, "value": "0x1"}])
    receipt = None
    for _ in range(100):  # bounded: anvil mines it at once, but the receipt may lag the answer
        receipt = rpc_proxy.rpc("eth_getTransactionReceipt", [sent])
        if receipt is not None:
            break
        time.sleep(0.05)
    assert receipt is not None, "anvil never mined the transaction"
    number = int(receipt["blockNumber"], 16)
    before = rpc_proxy.rpc("eth_getBlockByNumber", [hex(number), False])["hash"]
    head = rpc_proxy.block_number()
    rpc_proxy.reorg(head - number + 1)
    assert rpc_proxy.block_number() == head
    assert rpc_proxy.rpc("eth_getBlockByNumber", [hex(number), False])["hash"] != before
