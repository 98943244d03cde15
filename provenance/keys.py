"""Auditor BLS keys (BN254): key files (new, load, show) and their life on chain (register, rotate, revoke, and
the registered keys an aggregate is checked against).

A key file is an encrypted keystore (Web3 Secret Storage v3: scrypt + AES-128-CTR + MAC, through eth-keyfile,
already a dependency) holding the 32-byte secret scalar, plus the public part in clear. `cryptography` (for
AES-GCM) is not a dependency, so the standard Ethereum keystore is used: its KDF and MAC are what protect a stolen
file. The secret is never printed, logged or put in a repr; `show` reads only the public part and needs no
password. The password comes from `$PROV_KEY_PASSWORD` (or the CLI's hidden prompt).

On chain (AttestationRegistry, through an AttestationClient): an auditor account has one current key; rotating
registers a new key file's key and retires the old one (its attestations stay valid); revoking marks a key revoked
(its attestations, past and future, are reported as revoked). docs/attestations.md has the rules.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from provenance import canonical, config
from provenance._attest import bls
from provenance._chain.records import TxInfo
from provenance.errors import FormatError, UsageError
from provenance.fsutil import read_input

KEY_FORMAT = "prov.bls-key.v1"
ENV_PASSWORD = "PROV_KEY_PASSWORD"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEY_ID = re.compile(r"0x[0-9a-fA-F]{64}")


class KeyFileError(UsageError):
    """A key file is missing, malformed, or does not open with the password given."""


@dataclass(frozen=True)
class PublicKey:
    """The public part of an auditor key: what `prov keys show` prints and the registry stores."""

    name: str
    pk1: bls.G1Affine
    pk2: bls.G2Affine
    path: Path | None = None

    @property
    def key_id(self) -> str:
        return "0x" + bls.key_id(self.pk2).hex()

    def to_json(self) -> dict[str, Any]:
        (x_im, x_re), (y_im, y_re) = self.pk2
        return {"name": self.name, "curve": "bn254", "key_id": self.key_id,
                "pk1": [hex(self.pk1[0]), hex(self.pk1[1])],
                "pk2": [[hex(x_im), hex(x_re)], [hex(y_im), hex(y_re)]]}


@dataclass(frozen=True)
class SecretKey:
    """An opened key: the secret scalar (never shown) and its public keys."""

    public: PublicKey
    scalar: int = field(repr=False)

    def sign(self, message: bytes) -> bls.G1Affine:
        return bls.sign(self.scalar, message)

    def prove_possession(self, message: bytes) -> bls.G1Affine:
        return bls.prove_possession(self.scalar, message)

    def __repr__(self) -> str:
        return f"SecretKey({self.public.name}, key id {self.public.key_id})"


def keys_dir(home: Path | None = None) -> Path:
    """Where `prov keys new` writes key files by default: `<state dir>/keys`."""
    return config.subdir("keys", home=home)


def key_path(name_or_path: str | os.PathLike[str], *, home: Path | None = None) -> Path:
    """A key file: an existing path as given, else `<state dir>/keys/<name>.json`."""
    p = Path(name_or_path)
    if p.suffix == ".json" or p.exists() or os.sep in str(name_or_path):
        return p
    return keys_dir(home) / f"{check_name(str(name_or_path))}.json"


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsageError(f"key name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting alphanumeric")
    return name


def password_from_env() -> str | None:
    return os.environ.get(ENV_PASSWORD)


def new_key(name: str, password: str, *, path: Path | None = None, home: Path | None = None,
            scrypt_n: int | None = None) -> PublicKey:
    """Generate a key, write it encrypted (mode 0600, never overwriting) and return its public part.
    `scrypt_n` lowers the scrypt work factor (tests only; the default 2^18 protects a stolen file)."""
    from eth_keyfile import create_keyfile_json

    if not password:
        raise UsageError(f"an empty password would leave the key unprotected; set {ENV_PASSWORD}")
    target = path or key_path(check_name(name), home=home)
    scalar = bls.new_secret()
    pk1, pk2 = bls.public_keys(scalar)
    public = PublicKey(name, pk1, pk2, target)
    document = create_keyfile_json(scalar.to_bytes(32, "big"), password.encode("utf-8"), kdf="scrypt",
                                   iterations=scrypt_n)
    document.pop("address", None)  # a secp256k1 address of a BN254 scalar means nothing; do not publish it
    document["prov"] = {"format": KEY_FORMAT, **public.to_json(),
                        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{target}: a key file already exists; choose another name") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2)
    return public


def _read(path: Path) -> dict[str, Any]:
    data = read_input(path, missing="no such key file (create one with `prov keys new NAME`)", error=KeyFileError)
    try:
        document = canonical.load_json(data, source=f"{path} (key file)")
    except ValueError:
        raise KeyFileError(f"{path}: not a JSON key file") from None
    if not isinstance(document, dict) or not isinstance(document.get("prov"), dict) \
            or document["prov"].get("format") != KEY_FORMAT:
        raise KeyFileError(f"{path}: not a prov auditor key file ({KEY_FORMAT})")
    return document


def _public_from(meta: dict[str, Any], path: Path) -> PublicKey:
    try:
        pk1 = (int(meta["pk1"][0], 16), int(meta["pk1"][1], 16))
        (a, b), (c, d) = meta["pk2"]
        pk2 = ((int(a, 16), int(b, 16)), (int(c, 16), int(d, 16)))
        bls.g1_from_affine(pk1)
        bls.g2_from_affine(pk2)
        return PublicKey(str(meta["name"]), pk1, pk2, path)
    except (KeyError, TypeError, ValueError, FormatError) as exc:
        raise KeyFileError(f"{path}: malformed public key ({exc})") from None


def show_key(name_or_path: str | os.PathLike[str], *, home: Path | None = None) -> PublicKey:
    """The public part of a key file (no password needed)."""
    path = key_path(name_or_path, home=home)
    return _public_from(_read(path)["prov"], path)


def load_key(name_or_path: str | os.PathLike[str], password: str | None = None, *,
             home: Path | None = None) -> SecretKey:
    """Decrypt a key file (password: the argument, else `$PROV_KEY_PASSWORD`) and check the secret matches the
    public keys recorded beside it."""
    from eth_keyfile import decode_keyfile_json

    path = key_path(name_or_path, home=home)
    document = _read(path)
    public = _public_from(document["prov"], path)
    password = password_from_env() if password is None else password
    if password is None:
        raise KeyFileError(f"{path}: set {ENV_PASSWORD} to the key's password")
    try:
        raw = decode_keyfile_json(document, password.encode("utf-8"))
    except ValueError:
        raise KeyFileError(f"{path}: wrong password or corrupt key file") from None
    except (KeyError, TypeError):
        raise KeyFileError(f"{path}: not a Web3 Secret Storage keystore") from None
    scalar = int.from_bytes(raw, "big")
    if not 0 < scalar < bls.R or bls.public_keys(scalar) != (public.pk1, public.pk2):
        raise KeyFileError(f"{path}: the secret does not match the public key recorded in the file")
    return SecretKey(public, scalar)


# --- keys on chain ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredKey:
    """A key registered on chain: its auditor (account), self-declared name, public key and life: registered in
    `registered_block`, retired by a rotation in `retired_block`, revoked in `revoked_block` (0 when not)."""

    auditor: str
    key: PublicKey
    registered_block: int
    retired_block: int
    revoked_block: int
    tx_hash: str

    @property
    def key_id(self) -> str:
        return self.key.key_id

    @property
    def name(self) -> str:
        return self.key.name

    @property
    def revoked(self) -> bool:
        return self.revoked_block != 0

    @property
    def active(self) -> bool:
        """Whether it can sign new attestations: the auditor's current key, not revoked."""
        return self.retired_block == 0 and self.revoked_block == 0


class KeyRegistry(Protocol):
    """What these functions need of an AttestationRegistry client (provenance.attestations.attestation_client)."""

    @property
    def sender(self) -> str: ...
    def register_auditor(self, key: SecretKey, *, name: str | None = None) -> TxInfo: ...
    def rotate_key(self, key: SecretKey, *, name: str | None = None) -> TxInfo: ...
    def revoke_key(self, key_id: str) -> TxInfo: ...
    def key(self, key_id: str) -> RegisteredKey | None: ...
    def current_key(self, auditor: str) -> RegisteredKey | None: ...


@dataclass(frozen=True)
class Rotation:
    """A finished rotation: the key it replaced (its file kept at `archived`), the new key, and the transaction
    (None when an earlier, interrupted rotation had already sent it)."""

    previous: PublicKey
    key: PublicKey
    archived: Path
    tx: TxInfo | None


def registered_keys(client: KeyRegistry, auditors: Iterable[str]) -> dict[str, RegisteredKey]:
    """The current key of each auditor that has one (revoked ones included: the caller says why it refuses them),
    by lower-case address. These, not the keys a signed file carries, are what an aggregate is checked against."""
    found = {}
    for auditor in {a.lower() for a in auditors}:
        registered = client.current_key(_checksum(auditor))
        if registered is not None:
            found[auditor] = registered
    return found


def register_key(client: KeyRegistry, name_or_path: str | os.PathLike[str], password: str | None = None, *,
                 home: Path | None = None) -> tuple[PublicKey, TxInfo]:
    """Register a key file's key for the sending account, with its proof of possession."""
    key = load_key(name_or_path, password, home=home)
    return key.public, client.register_auditor(key)


def rotate_key(client: KeyRegistry, name_or_path: str | os.PathLike[str], password: str | None = None, *,
               home: Path | None = None, scrypt_n: int | None = None) -> Rotation:
    """Replace the sending account's active key (the one in this key file) by a new key, written to the same file.

    Crash-safe and repeatable: the new key is first written beside the file (`NAME.next.json`, same password), then
    registered with `rotateKey`, and only then does it take the file's place (the old file is kept as
    `NAME.<old key id prefix>.json`). Run again after an interruption, it reuses the pending key and finishes.
    """
    path = key_path(name_or_path, home=home)
    previous = show_key(path)
    pending = path.with_name(path.name.removesuffix(".json") + ".next.json")
    if not pending.exists():
        new_key(previous.name, password if password is not None else _password_or_fail(path), path=pending,
                scrypt_n=scrypt_n)
    key = load_key(pending, password)
    current = client.current_key(client.sender)
    tx = None
    if current is None or current.key_id != key.public.key_id:
        if current is None or current.key_id != previous.key_id:
            registered = "no key" if current is None else f"key {current.key_id}"
            raise UsageError(f"{client.sender} has {registered} registered, not {path.name}'s {previous.key_id}; "
                             "rotate the key file that holds the registered key")
        tx = client.rotate_key(key, name=previous.name)
    archived = path.with_name(f"{path.name.removesuffix('.json')}.{previous.key_id[2:10]}.json")
    os.replace(path, archived)
    os.replace(pending, path)
    return Rotation(previous=previous, key=dataclasses.replace(key.public, path=path), archived=archived, tx=tx)


def revoke_key(client: KeyRegistry, name_or_key_id: str, *, home: Path | None = None) -> tuple[str, TxInfo]:
    """Revoke a key of the sending account, named by its key file (no password needed) or its key id (`0x` + 64
    hex digits), e.g. when the file is lost or stolen. Returns the key id and the transaction."""
    by_id = _KEY_ID.fullmatch(name_or_key_id)
    key_id = name_or_key_id.lower() if by_id else show_key(name_or_key_id, home=home).key_id
    registered = client.key(key_id)
    if registered is None:
        raise UsageError(f"key {key_id} is not registered on this AttestationRegistry; nothing to revoke")
    if registered.auditor.lower() != client.sender.lower():
        raise UsageError(f"key {key_id} belongs to {registered.auditor}; send the revocation from that account")
    return key_id, client.revoke_key(key_id)


def _password_or_fail(path: Path) -> str:
    password = password_from_env()
    if not password:
        raise KeyFileError(f"{path}: set {ENV_PASSWORD} to the key's password")
    return password


def _checksum(address: str) -> str:
    from eth_utils import to_checksum_address

    return str(to_checksum_address(address))
