"""Signing keys: from an argument, an encrypted keystore file (`--keystore FILE` or `PROV_KEYSTORE`, password in
`PROV_KEYSTORE_PASSWORD`), the `PROV_PRIVATE_KEY` environment variable, or — only on a local dev chain — its
well-known dev accounts.

A key is never logged or printed: `Signer` shows only its address and where the key came from.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provenance import canonical
from provenance._chain.errors import SignerError

ENV_KEY = "PROV_PRIVATE_KEY"
ENV_KEYSTORE = "PROV_KEYSTORE"  # a keystore file to sign with (`--keystore FILE` of train and anchor sets it)
ENV_KEYSTORE_PASSWORD = "PROV_KEYSTORE_PASSWORD"
# Anvil's and Hardhat's default chain id, and their public dev mnemonic (known to everyone: local use only).
LOCAL_CHAIN_ID = 31337
DEV_MNEMONIC = "test test test test test test test test test test test junk"
# Chain ids a development node uses by default (anvil/Hardhat; geth --dev/Ganache). A well-known key signs only on
# one of these, and only when the node also answers as a development node: a public chain can use any id.
DEV_CHAIN_IDS = frozenset({31337, 1337})
DEV_ACCOUNTS = 20  # Hardhat funds 20 accounts of the mnemonic, anvil 10: all of them are public
# web3_clientVersion prefixes of development nodes ("EthereumTester" is the in-process py-evm chain).
DEV_CLIENTS = ("anvil", "hardhat", "ganache", "ethereumtester")


class WellKnownKey(SignerError):
    """A development key everyone knows, offered for a chain that is not a local development chain."""


@dataclass(frozen=True)
class Signer:
    """A local account and a description of where its key came from (for messages; never the key)."""

    account: Any = field(repr=False)
    source: str

    @property
    def address(self) -> str:
        return str(self.account.address)

    def __repr__(self) -> str:
        return f"Signer({self.address}, {self.source})"


def from_private_key(key: str | bytes, *, source: str) -> Signer:
    from eth_account import Account

    try:
        return Signer(Account.from_key(key), source)
    except (ValueError, TypeError):
        raise SignerError(f"the private key from {source} is not a valid 32-byte hex key") from None


def from_keystore(path: str | os.PathLike[str], password: str | None = None) -> Signer:
    """Decrypt a keystore (Web3 Secret Storage JSON); the password defaults to `$PROV_KEYSTORE_PASSWORD`."""
    from eth_account import Account

    p = Path(path)
    password = os.environ.get(ENV_KEYSTORE_PASSWORD) if password is None else password
    if password is None:
        raise SignerError(f"keystore {p}: set {ENV_KEYSTORE_PASSWORD} to its password")
    try:
        document = canonical.load_json(p.read_bytes(), source=f"keystore {p}")
    except OSError as exc:
        raise SignerError(f"keystore {p}: cannot read ({exc.strerror or exc})") from None
    except ValueError:
        raise SignerError(f"keystore {p}: not a JSON keystore file") from None
    try:
        key = Account.decrypt(document, password)
    except ValueError:
        raise SignerError(f"keystore {p}: wrong password or corrupt keystore") from None
    except (KeyError, TypeError):
        raise SignerError(f"keystore {p}: not a Web3 Secret Storage keystore") from None
    return Signer(Account.from_key(key), f"keystore {p}")


def write_keystore(path: str | os.PathLike[str], key: str | bytes, password: str, *,
                   scrypt_n: int | None = None) -> str:
    """Encrypt `key` into a new keystore file (mode 0600); returns the account address. `scrypt_n` lowers the
    scrypt work factor (tests only: the default, 2^18, is what protects a stolen file)."""
    from eth_account import Account

    document = Account.encrypt(key, password, kdf="scrypt", iterations=scrypt_n)  # type: ignore[arg-type]
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(document, f)
    return str(Account.from_key(key).address)


def dev_signer(index: int = 0) -> Signer:
    """Dev account `index` of anvil and Hardhat (derived from their public mnemonic)."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    account = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return Signer(account, f"local dev account {index} (well-known key: local chains only)")


@functools.cache
def well_known_addresses() -> dict[str, int]:
    """Lower-case address → account index of the public test mnemonic's first `DEV_ACCOUNTS` accounts."""
    from eth_account import Account
    from eth_account.hdaccount import key_from_seed, seed_from_mnemonic

    seed = seed_from_mnemonic(DEV_MNEMONIC, "")
    return {str(Account.from_key(key_from_seed(seed, f"m/44'/60'/0'/0/{i}")).address).lower(): i
            for i in range(DEV_ACCOUNTS)}


def dev_account_index(address: str) -> int | None:
    """Which account of the public test mnemonic `address` is, or None when it is not one of them."""
    return well_known_addresses().get(address.lower())


def client_version(web3: Any) -> str:
    """The node's `web3_clientVersion`, lower case without spaces; "" when it cannot answer."""
    try:
        return str(web3.client_version).lower().replace(" ", "")
    except Exception:  # any failure to answer: not taken for a dev node (a dev key is then refused, never accepted)
        return ""


def answers_as_dev_node(web3: Any) -> bool:
    """Whether the node at `web3` says it is a development node (anvil, Hardhat, Ganache, the in-process py-evm
    chain) through `web3_clientVersion`."""
    return client_version(web3).startswith(DEV_CLIENTS)


def check_chain(signer: Signer, *, chain_id: int | None, web3: Any = None) -> Signer:
    """`signer`, unless it is a well-known development key on a chain that is not a known local development chain
    (SignerError): such a key is public, so anything it signs on a real network proves nothing and can be stolen.

    Allowed only when the chain id is a development id (31337, 1337) and the node answers as a development node,
    or on the in-process py-evm chain. Without a node to ask (`web3` None) only the chain id is checked."""
    index = dev_account_index(signer.address)
    if index is None:
        return signer
    version = "" if web3 is None else client_version(web3)
    in_process = version.startswith("ethereumtester")
    dev_node = web3 is None or version.startswith(DEV_CLIENTS)
    if in_process or (chain_id in DEV_CHAIN_IDS and dev_node):
        return signer
    where = f"chain id {chain_id}" if chain_id is not None else "this chain"
    if chain_id in DEV_CHAIN_IDS:
        where += f", whose node does not answer as a development node ({version or 'no client version'})"
    raise WellKnownKey(
        f"{signer.source} is {signer.address}, account {index} of the public test mnemonic ({DEV_MNEMONIC!r}): "
        f"anyone can sign with it, so it is refused on {where}; use your own key ({ENV_KEY} or --keystore FILE)")


def use_keystore(path: str | os.PathLike[str]) -> None:
    """Sign with this keystore wherever a signer is resolved from now on: this process and the ones it starts (the
    outbox's worker, torchrun's ranks) read `$PROV_KEYSTORE` (`--keystore FILE` of train and anchor)."""
    os.environ[ENV_KEYSTORE] = str(Path(path).resolve())


def key_given() -> bool:
    """Whether the environment names a signing key (`$PROV_KEYSTORE` or `$PROV_PRIVATE_KEY`)."""
    return bool(os.environ.get(ENV_KEYSTORE) or os.environ.get(ENV_KEY))


def resolve(
    key: str | bytes | Signer | None = None,
    *,
    keystore: str | os.PathLike[str] | None = None,
    chain_id: int | None = None,
    dev_key: bytes | None = None,
    web3: Any = None,
) -> Signer:
    """The signer to use, first match wins: `key`, `keystore`, `$PROV_KEYSTORE`, `$PROV_PRIVATE_KEY`, then — only on
    a local dev chain — `dev_key` (the in-process chain's funded key) or anvil's dev account 0. A well-known
    development key is refused unless the chain is a local development chain (`check_chain`; pass the node as
    `web3`)."""
    signer = _resolve(key, keystore=keystore, chain_id=chain_id, dev_key=dev_key)
    return check_chain(signer, chain_id=chain_id, web3=web3) if (chain_id is not None or web3 is not None) \
        else signer


def _resolve(
    key: str | bytes | Signer | None,
    *,
    keystore: str | os.PathLike[str] | None,
    chain_id: int | None,
    dev_key: bytes | None,
) -> Signer:
    if isinstance(key, Signer):
        return key
    if key is not None:
        return from_private_key(key, source="the key argument")
    if keystore is not None:
        return from_keystore(keystore)
    if os.environ.get(ENV_KEYSTORE):
        return from_keystore(os.environ[ENV_KEYSTORE])
    env = os.environ.get(ENV_KEY)
    if env:
        return from_private_key(env.strip(), source=f"${ENV_KEY}")
    if dev_key is not None:
        return from_private_key(dev_key, source="the in-process chain's funded account 0")
    if chain_id == LOCAL_CHAIN_ID:
        return dev_signer(0)
    raise SignerError(
        f"no signing key: set {ENV_KEY}, or pass --keystore FILE (or set {ENV_KEYSTORE}) with "
        f"{ENV_KEYSTORE_PASSWORD} set "
        f"(dev accounts are used only on a local chain, id {LOCAL_CHAIN_ID})"
    )
