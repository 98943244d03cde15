"""A hostile JSON-RPC node (#22): slow drip, floods, deep JSON, HTML, rate limiting. Each `prov verify` against
it ends within 30 s and 300 MiB above baseline with one `prov: error:` line and exit 2 (could not verify), never
FAILED and never a segfault; an honest node behind a 429 is retried."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.hostile.child import assert_bounded, run_child, run_prov
from tests.hostile.servers import Behaviour, rpc_result, serve

REGISTRY = "0x" + "11" * 20


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    path = tmp_path / "adapter_model.safetensors"
    save_file({"base_model.model.layers.0.q_proj.lora_A.weight": np.zeros((2, 4), dtype=np.float32)}, str(path))
    return path


def verify_against(url: str, adapter: Path, *extra: str) -> str:
    outcome = run_prov("verify", str(adapter), "--rpc", url, "--registry", REGISTRY, "--store",
                       f"local:{adapter.parent / 'store'}", *extra, cwd=adapter.parent)
    return assert_bounded(outcome)


@pytest.mark.slow
def test_a_slow_drip_node_is_cut_off_at_the_deadline(adapter: Path) -> None:
    with serve(Behaviour(mode="drip", drip_every=0.5, drip_bytes=200)) as url:
        line = verify_against(url, adapter, "--timeout", "4")
    assert url in line and ("still answering" in line or "deadline" in line)


@pytest.mark.slow
def test_a_node_dripping_its_headers_is_cut_off_at_the_deadline(adapter: Path) -> None:
    """Every socket read returns within its timeout, so only a deadline on the whole request ends it (#22)."""
    with serve(Behaviour(mode="headdrip", drip_every=0.5, drip_bytes=200)) as url:
        line = verify_against(url, adapter, "--timeout", "4")
    assert url in line and "still answering" in line


@pytest.mark.parametrize("declare", [512 << 20, None], ids=["declared", "undeclared"])
def test_a_512_mib_answer_is_refused_by_size(adapter: Path, declare: int | None) -> None:
    with serve(Behaviour(mode="flood", declare=declare, flood_bytes=96 << 20)) as url:
        line = verify_against(url, adapter)
    assert url in line and "limit" in line


def test_json_nested_200000_deep_is_an_error_not_a_segfault(adapter: Path) -> None:
    with serve(Behaviour(mode="deep", depth=200_000)) as url:
        line = verify_against(url, adapter)
    assert "nested deeper" in line and url in line


def test_an_html_answer_names_the_node(adapter: Path) -> None:
    with serve(Behaviour(mode="notjson")) as url:
        line = verify_against(url, adapter)
    assert url in line and "JSON" in line


def test_rate_limited_requests_are_retried_with_backoff() -> None:
    from web3 import Web3

    from provenance._chain.transport import bounded_provider

    behaviour = Behaviour(mode="throttle", throttle=2, answer=rpc_result("0x7a69"))
    with serve(behaviour) as url:
        assert Web3(bounded_provider(url, timeout=10)).eth.chain_id == 31337
    assert len(behaviour.requests) == 3  # two 429s, then the answer


def test_persistent_rate_limiting_is_one_error() -> None:
    from web3 import Web3

    from provenance._chain.errors import RpcUnreachable
    from provenance._chain.transport import bounded_provider

    with serve(Behaviour(mode="throttle", throttle=100, answer=rpc_result("0x1"))) as url, \
            pytest.raises(RpcUnreachable, match="429"):
        _ = Web3(bounded_provider(url, timeout=10)).eth.chain_id


def test_the_recursion_limit_is_restored_after_the_chain_libraries_load() -> None:
    code = ("import sys, web3, py_ecc\n"
            "from provenance._chain.transport import Transport\n"
            "from provenance._chain.errors import RevertDecoder\n"
            "url = sys.argv[1]\n"
            "t = Transport(url, decoder=RevertDecoder([]))\n"
            "assert sys.getrecursionlimit() <= 10000, sys.getrecursionlimit()\n"
            "from provenance.canonical import load_json\n"
            "try:\n    load_json(b'[' * 200000 + b']' * 200000, source='x')\nexcept Exception as e:\n"
            "    print(type(e).__name__)\n")
    with serve(Behaviour(answer=rpc_result("0x7a69"))) as url:
        outcome = run_child([sys.executable, "-c", code, url])
    assert outcome.code == 0, outcome.stderr[-2000:]
    assert outcome.stdout.strip() == "FormatError"
