"""`prov train` and its chain: an anchored run needs a chain that outlives the process. With none configured it is
refused in one line that says how to get one; the throw-away in-process chain is used only when named
(`--chain tester`) and then with a warning; "anchored yes" is printed only when it is true."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provenance.cli import main
from provenance.errors import UsageError
from training.anchoring import TESTER_WARNING, chain_warnings, resolve_target
from training.config import AnchorConfig

FAST = ["--steps", "2", "--checkpoint-every", "1", "--threads", "1"]


def test_no_chain_configured_is_refused_in_one_line(isolated_state: Path, tiny_model_dir: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = isolated_state / "never"
    assert main(["train", "--model", str(tiny_model_dir), *FAST, "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prov: error: ") and err.count("\n") == 1, err
    assert "prov chain up" in err and "--chain tester" in err and "--no-anchor" in err
    assert not out.exists()  # refused before any run directory is written


def test_resolve_target_never_falls_back_to_the_tester_chain(isolated_state: Path) -> None:
    from provenance.config import update_section

    with pytest.raises(UsageError, match="none is configured"):
        resolve_target(AnchorConfig())
    assert resolve_target(AnchorConfig(chain="tester"))[0] == "tester"
    assert chain_warnings(AnchorConfig(chain="tester")) == [TESTER_WARNING]
    assert chain_warnings(AnchorConfig(enabled=False)) == []
    update_section("chain", {"rpc_url": "http://127.0.0.1:8545", "registry": "0x" + "ab" * 20},
                   home=isolated_state)
    assert resolve_target(AnchorConfig()) == ("http://127.0.0.1:8545", "0x" + "ab" * 20, "local")
    assert chain_warnings(AnchorConfig()) == []


def test_no_anchor_does_not_print_anchored_yes(isolated_state: Path, tiny_model_dir: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--model", str(tiny_model_dir), *FAST, "--no-anchor", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "anchored no (anchoring off)" in out and "anchored yes" not in out
    assert main(["train", "--model", str(tiny_model_dir), *FAST, "--no-anchor", "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["anchored"] is False


def test_explicit_tester_chain_trains_anchored_and_warns(isolated_state: Path, tiny_model_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--model", str(tiny_model_dir), *FAST, "--chain", "tester"]) == 0
    captured = capsys.readouterr()
    assert "anchored yes" in captured.out
    assert "in-process test chain" in captured.err + captured.out and "vanishes" in captured.err + captured.out


def test_a_dev_key_for_a_public_chain_is_refused_before_training(isolated_state: Path, tiny_model_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The project's chain is recorded as chain id 10 and PROV_PRIVATE_KEY is anvil's account 0: `prov train`
    refuses in one line before a run directory exists (not at registration, after training started)."""
    from provenance._chain.keys import ENV_KEY, dev_signer
    from provenance.config import update_section

    update_section("chain", {"rpc_url": "http://127.0.0.1:9", "registry": "0x" + "ab" * 20, "chain_id": 10},
                   home=isolated_state)
    monkeypatch.setenv(ENV_KEY, bytes(dev_signer(0).account.key).hex())
    out = isolated_state / "never"
    assert main(["train", "--model", str(tiny_model_dir), *FAST, "--quiet", "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert err.startswith("prov: error: ") and err.count("\n") == 1, err
    assert "public test mnemonic" in err and "chain id 10" in err and not out.exists()
