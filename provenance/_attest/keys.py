"""Auditor BLS key files: an encrypted keystore (Web3 Secret Storage v3: scrypt + AES-128-CTR + MAC, through
eth-keyfile, already a dependency) holding the 32-byte BN254 secret scalar, plus the public part in clear.

`cryptography` (for AES-GCM) is not a dependency, so the standard Ethereum keystore is used: its KDF and MAC are
what protect a stolen file. The secret is never printed, logged or put in a repr; `show` reads only the public
part and needs no password. The password comes from `$PROV_KEY_PASSWORD` (or the CLI's hidden prompt).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provenance import config
from provenance._attest import bls
from provenance.errors import FormatError, UsageError

KEY_FORMAT = "prov.bls-key.v1"
ENV_PASSWORD = "PROV_KEY_PASSWORD"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file (create one with `prov keys new NAME`)") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
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
