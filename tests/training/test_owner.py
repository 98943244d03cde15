"""The run manifest's `owner`: the account the outbox will register from, when it is known without the network."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.anchoring import expected_owner
from training.config import AnchorConfig

KEY = "0x" + "11" * 32  # an arbitrary private key


def test_owner_is_the_key_the_outbox_will_sign_with(isolated_state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from eth_account import Account

    from provenance._chain.keys import dev_signer
    from provenance.config import update_section

    monkeypatch.delenv("PROV_PRIVATE_KEY", raising=False)
    assert expected_owner(AnchorConfig(enabled=False)) is None
    assert expected_owner(AnchorConfig(chain="tester")) is None  # the in-process chain's key exists only later
    update_section("chain", {"rpc_url": "http://127.0.0.1:8545", "chain_id": 31337}, home=isolated_state)
    assert expected_owner(AnchorConfig()) == dev_signer(0).address  # the project's local anvil: dev account 0
    assert expected_owner(AnchorConfig(chain="http://10.0.0.1:8545")) is None  # unknown chain, no key: unknown
    monkeypatch.setenv("PROV_PRIVATE_KEY", KEY)
    assert expected_owner(AnchorConfig(chain="tester")) == Account.from_key(KEY).address
    assert expected_owner(AnchorConfig(chain="http://10.0.0.1:8545")) == Account.from_key(KEY).address
