"""The connection under the registry client: the web3 provider (in-process py-evm or JSON-RPC), signing, sending,
waiting for receipts, and turning every failure into a one-line typed error.

Nonces come from the node's pending count at each send (under a lock), so a client that restarts, or two clients
sharing a key, never reuse one; a "nonce too low" race is retried once with a fresh count. A transaction that is
not mined within the timeout is reported as pending (it may still land) or dropped (the node forgot it) — never
assumed to have succeeded.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from provenance._chain import keys
from provenance._chain.errors import (
    InsufficientFunds,
    RevertDecoder,
    RpcUnreachable,
    TransactionDropped,
    TransactionFailed,
    TransactionTimeout,
    WrongChainId,
)
from provenance.canonical import restore_recursion_limit
from provenance.errors import ChainError, UsageError, one_line

TESTER = "tester"
GAS_MARGIN = 1.1  # estimates are exact for this contract; the margin absorbs state changes before mining
# what nodes answer to a transaction they already hold (geth/erigon, nethermind, besu, parity-style)
ALREADY_KNOWN = re.compile(r"(?<![a-z])(already known|known transaction|already imported|transaction already exists)")
P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def rpc_errors(rpc_url: str) -> Iterator[None]:
    """Turn transport failures (refused, timed out, not JSON-RPC) into a one-line RpcUnreachable."""
    from web3.exceptions import BadResponseFormat, ProviderConnectionError, RequestTimedOut

    try:
        yield
    except (OSError, ProviderConnectionError, RequestTimedOut, BadResponseFormat) as exc:
        reason = one_line(exc)
        if isinstance(exc, OSError) and "Connection refused" in reason:
            reason = "connection refused"
        raise RpcUnreachable(f"cannot reach the chain at {rpc_url}: {reason[:160]} "
                             "(is the node running? `prov chain up` starts a local one)") from None


def wrap_rpc(method: Callable[P, R]) -> Callable[P, R]:
    """Decorator for methods of objects with a `transport`: RPC failures become RpcUnreachable."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with rpc_errors(args[0].transport.rpc_url):  # type: ignore[attr-defined]
            return method(*args, **kwargs)

    return wrapper


REQUEST_TIMEOUT = 30.0  # wall-clock seconds for one JSON-RPC request, however slowly the node drips its answer
MAX_RPC_ANSWER = 64 << 20  # an honest answer (a page of logs, a block) is far smaller; 512 MiB is an attack


def bounded_provider(url: str, *, timeout: float = REQUEST_TIMEOUT) -> Any:
    """A web3 HTTP provider whose every request has a wall-clock deadline (also the active `limits` budget's), a
    size cap, bounded retries with backoff on 429/5xx, and JSON answers parsed by the bounded reader."""
    import requests
    from web3 import HTTPProvider

    from provenance import _http
    from provenance.canonical import load_json
    from provenance.errors import FormatError

    class BoundedHTTPProvider(HTTPProvider):
        def __init__(self) -> None:
            # web3 asks eth_chainId before every contract call; an endpoint's chain id is read once (web3's own
            # request cache, eth_chainId only): 6 of a demo verification's 32 round trips were repeats
            super().__init__(url, request_kwargs={"timeout": timeout}, cache_allowed_requests=True,
                             cacheable_requests={"eth_chainId"}, request_cache_validation_threshold=None)
            self._session = requests.Session()
            self._headers = dict(self.get_request_headers())

        def _make_request(self, method: Any, request_data: bytes) -> bytes:
            what = f"{method} to {url}"
            try:
                answer = _http.post(self._session, url, data=request_data, headers=self._headers, timeout=timeout,
                                    max_bytes=MAX_RPC_ANSWER, what=what)
            except _http.HttpFailure as exc:
                if exc.timed_out or exc.too_large or exc.status is not None:
                    raise RpcUnreachable(f"the chain at {url}: {exc.reason}") from None
                raise RpcUnreachable(f"cannot reach the chain at {url}: {exc.reason} (is the node running? "
                                     "`prov chain up` starts a local one)") from None
            if answer.status >= 400 and not answer.body.lstrip().startswith(b"{"):
                raise RpcUnreachable(f"the chain at {url} answered {method} with HTTP {answer.status}; is it a "
                                     "JSON-RPC endpoint?")
            return answer.body

        def make_batch_request(self, batch_requests: Any) -> Any:
            raw = self._make_request("batch", self.encode_batch_rpc_request(batch_requests))
            return self.decode_rpc_response(raw)

        def decode_rpc_response(self, raw_response: bytes) -> Any:  # type: ignore[override]
            try:
                return load_json(raw_response, source=f"the answer of the chain at {url}", max_size=MAX_RPC_ANSWER)
            except FormatError as exc:
                raise RpcUnreachable(f"{exc}: not a JSON-RPC node, or a faulty one") from None

    return BoundedHTTPProvider()


def _wei(value: int) -> str:
    return f"{value / 10**18:.6g} ETH"


class Transport:
    """A connected web3 plus the signer used for writes (resolved on the first write, so reading needs no key)."""

    def __init__(
        self,
        rpc_url: str | None,
        *,
        chain_id: int | None = None,
        key: str | bytes | keys.Signer | None = None,
        keystore: str | os.PathLike[str] | None = None,
        timeout: float = 120.0,
        decoder: RevertDecoder,
    ) -> None:
        from web3 import EthereumTesterProvider, Web3

        self.rpc_url = rpc_url or TESTER
        if self.rpc_url != TESTER:  # py-evm (the in-process chain) runs contracts recursively: it keeps its limit
            restore_recursion_limit()

        self.timeout = timeout
        self.decoder = decoder
        self._dev_key: bytes | None = None
        self._lock = threading.Lock()
        self._key, self._keystore = key, keystore
        self._signer: keys.Signer | None = key if isinstance(key, keys.Signer) else None
        if self.rpc_url == TESTER:
            provider = EthereumTesterProvider()
            assert provider.ethereum_tester is not None
            self._dev_key = provider.ethereum_tester.backend.account_keys[0].to_bytes()
            self.web3 = Web3(provider)
        elif self.rpc_url.startswith(("http://", "https://")):
            self.web3 = Web3(bounded_provider(self.rpc_url))
        else:
            raise UsageError(f"unsupported RPC URL {self.rpc_url!r}: use http(s)://HOST:PORT or '{TESTER}'")
        with rpc_errors(self.rpc_url):
            self.chain_id = int(self.web3.eth.chain_id)
        if chain_id is not None and int(chain_id) != self.chain_id:
            raise WrongChainId(f"{self.rpc_url} serves chain id {self.chain_id}, expected {chain_id} "
                               "(wrong network, or a local chain restarted without its state)")

    def contract_at(self, address: str, artifact: Any, *, name: str, hint: str = "") -> Any:
        """The web3 contract at `address`, refusing an invalid address (RegistryNotConfigured), an address with no
        code (NoContract) and code that is not exactly the packaged `artifact` (NotARegistry)."""
        from web3 import Web3

        from provenance._chain.errors import NoContract, NotARegistry, RegistryNotConfigured

        if not Web3.is_address(address):
            raise RegistryNotConfigured(f"{address!r} is not an address")
        checksum = Web3.to_checksum_address(address)
        with rpc_errors(self.rpc_url):
            code = bytes(self.web3.eth.get_code(checksum))
        where = f"{checksum} on {self.rpc_url} (chain {self.chain_id})"
        if not code:
            raise NoContract(f"no contract at {where}{hint}")
        if code != artifact.deployed_bytecode:
            raise NotARegistry(f"the contract at {where} is not this version of {name} "
                               "(its code differs from the packaged artifact)")
        return self.web3.eth.contract(address=checksum, abi=artifact.abi)

    def view(self, fn: Any, *, block: int | None = None) -> Any:
        """Call a contract view function (at `block`, default latest), turning a custom-error revert into its typed
        Python error."""
        try:
            return fn.call() if block is None else fn.call(block_identifier=block)
        except Exception as exc:
            if isinstance(exc, OSError):
                raise
            decoded = self.decoder.from_exception(exc)
            if decoded is None:
                raise
            raise decoded from None

    def dev_keys(self) -> list[bytes]:
        """The funded keys of the in-process chain (empty on JSON-RPC backends)."""
        if self.rpc_url != TESTER:
            return []
        return [k.to_bytes() for k in self.web3.provider.ethereum_tester.backend.account_keys]  # type: ignore[attr-defined]

    @property
    def signer(self) -> keys.Signer:
        if self._signer is None:
            self._signer = keys.resolve(self._key, keystore=self._keystore, chain_id=self.chain_id,
                                        dev_key=self._dev_key, web3=self.web3)  # dev keys: dev chains only
        return self._signer

    def with_signer(self, key: str | bytes | keys.Signer) -> Transport:
        """A transport on the same connection signing with another key."""
        clone = object.__new__(Transport)
        clone.__dict__.update(self.__dict__)
        clone._lock = self._lock  # one lock per connection, shared in case both sign with the same key
        clone._signer = keys.resolve(key, chain_id=self.chain_id, web3=self.web3)
        return clone

    def with_decoder(self, decoder: RevertDecoder) -> Transport:
        """A transport on the same connection decoding reverts with `decoder` (another contract's errors)."""
        clone = object.__new__(Transport)
        clone.__dict__.update(self.__dict__)
        clone.decoder = decoder
        return clone

    def transact(self, call: Any, *, what: str) -> Any:
        """Sign and send `call` (a contract function call or constructor), wait for its receipt, and return it.
        Reverts are raised as the registry's typed errors, before sending when the node's estimate sees them."""
        from web3.exceptions import Web3RPCError

        signer = self.signer
        eth = self.web3.eth
        with rpc_errors(self.rpc_url), self._lock:  # held from nonce to send, not while waiting for the receipt
            for attempt in (1, 2):
                nonce = eth.get_transaction_count(signer.address, "pending")  # type: ignore[arg-type]
                tx = self._build(call, signer, nonce, what)
                self._check_funds(signer, tx, what)
                raw = signer.account.sign_transaction(tx).raw_transaction
                try:
                    tx_hash = eth.send_raw_transaction(raw)
                    break
                except (Web3RPCError, ValueError) as exc:  # eth-tester raises ValidationError (a ValueError)
                    text = one_line(exc).lower()
                    if ALREADY_KNOWN.search(text):
                        # a re-send (a gateway lost the first answer, and it or the HTTP layer sent it again): the
                        # node holds this very transaction, so wait for it by its hash
                        tx_hash = self.web3.keccak(raw)
                        break
                    if attempt == 1 and "nonce" in text and ("low" in text or "expected" in text):
                        continue  # another client with this key sent first: count again
                    raise self._classify(exc, what, signer) from None
        return self.wait(tx_hash.to_0x_hex(), what=what, nonce=nonce, call_tx=tx)

    def _build(self, call: Any, signer: keys.Signer, nonce: int, what: str) -> dict[str, Any]:
        try:
            tx = dict(call.build_transaction({"from": signer.address, "nonce": nonce, "chainId": self.chain_id}))
        except Exception as exc:
            if isinstance(exc, OSError):
                raise
            raise self._classify(exc, what, signer) from None
        tx["gas"] = int(tx["gas"] * GAS_MARGIN)
        return tx

    def _check_funds(self, signer: keys.Signer, tx: dict[str, Any], what: str) -> None:
        price = int(tx.get("maxFeePerGas") or tx.get("gasPrice") or 0)
        cost = int(tx["gas"]) * price + int(tx.get("value", 0))
        if self._balance(signer) < cost:
            raise self._insufficient(signer, what, cost)

    def _balance(self, signer: keys.Signer) -> int:
        return int(self.web3.eth.get_balance(signer.address))  # type: ignore[arg-type]

    def _insufficient(self, signer: keys.Signer, what: str, cost: int | None) -> InsufficientFunds:
        need = f"needs up to {_wei(cost)}" if cost is not None else "cannot pay"
        return InsufficientFunds(f"{what}: account {signer.address} ({signer.source}) has "
                                 f"{_wei(self._balance(signer))}, {need} for gas; fund it and retry")

    def _classify(self, exc: BaseException, what: str, signer: keys.Signer) -> ChainError:
        decoded = self.decoder.from_exception(exc)
        if decoded is not None:
            return decoded
        text = one_line(exc)
        if "insufficient funds" in text.lower() or "cannot afford" in text.lower():
            return self._insufficient(signer, what, None)
        return ChainError(f"{what}: the node refused the transaction: {text[:200]}")

    def wait(self, tx_hash: str, *, what: str, nonce: int | None = None, call_tx: dict[str, Any] | None = None) -> Any:
        """Wait for `tx_hash` to be mined; raise if it reverted, was dropped, or is still pending at the timeout."""
        from web3.exceptions import TimeExhausted, TransactionNotFound

        eth = self.web3.eth
        with rpc_errors(self.rpc_url):
            try:
                receipt = eth.wait_for_transaction_receipt(tx_hash, timeout=self.timeout, poll_latency=0.2)  # type: ignore[arg-type]
            except TimeExhausted:
                try:
                    eth.get_transaction(tx_hash)  # type: ignore[arg-type]
                except TransactionNotFound:
                    raise TransactionDropped(
                        f"{what}: transaction {tx_hash} was dropped by the node before being mined; nothing was "
                        "written — send it again", tx_hash=tx_hash) from None
                raise TransactionTimeout(
                    f"{what}: transaction {tx_hash} is still pending after {self.timeout:.0f}s"
                    + (f" (nonce {nonce})" if nonce is not None else "")
                    + "; it may still be mined — check before sending again", tx_hash=tx_hash) from None
            if receipt["status"] != 1:
                raise self._explain_failure(receipt, tx_hash, what, call_tx)
            return receipt

    def _explain_failure(self, receipt: Any, tx_hash: str, what: str, call_tx: dict[str, Any] | None) -> ChainError:
        """Replay a mined, failed transaction as a call on the state of its block to recover the revert reason."""
        if call_tx is not None:
            replay = {k: call_tx[k] for k in ("from", "to", "data", "value", "gas") if k in call_tx}
            try:
                self.web3.eth.call(replay, block_identifier=receipt["blockNumber"])  # type: ignore[arg-type]
            except Exception as exc:
                decoded = self.decoder.from_exception(exc, tx_hash=tx_hash)
                if decoded is not None:
                    return decoded
        return TransactionFailed(f"{what}: transaction {tx_hash} failed in block {receipt['blockNumber']} "
                                 "(status 0) with no decodable reason", tx_hash=tx_hash)
