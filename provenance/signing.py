"""The trainer's P-256 signing key, OpenSSF model signatures (OMS, through the `model-signing` library) over a
shipped adapter or merged model, the check `prov verify` makes of a signature beside the model, and DSSE envelopes
signed with the same key (for prov's in-toto statements, provenance/intoto.py).

Keys are stored like prov's other keys (provenance/keys.py): under `<state dir>/keys`, the private key encrypted
(PKCS#8 PEM, password from `$PROV_KEY_PASSWORD`), mode 0600, never overwritten, and never printed; the public key sits
beside it (`NAME.p256.pub.pem`) for whoever checks signatures. A key id is SHA-256 of the public key's PEM, the
`hint` model-signing writes into its bundles, so an OMS signature and a DSSE envelope name the same key.

Signatures go *beside* what they sign (`PATH.sig`), never inside: a file added to a checkpoint directory would
change the checkpoint digest the chain committed. The `model-signing` library (the `compliance` extra) is imported
only when signing or checking a signature.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance import canonical, config
from provenance.errors import FormatError, ProvenanceError, UsageError, one_line
from provenance.fsutil import read_input
from provenance.keys import ENV_PASSWORD, check_name, password_from_env

DEFAULT_KEY = "trainer"
OMS_PREDICATE = "https://model_signing/signature/v1.0"
SIGNATURE_SUFFIX = ".sig"
MAX_SIGNATURE_BYTES = 16 * 1024 * 1024  # a bundle lists one digest per file: far below this for any model
_INSTALL = "install prov's compliance extra (pip install 'prov[compliance]')"


class SigningKeyError(UsageError):
    """A signing key file is missing, malformed, or does not open with the password given."""


@dataclass(frozen=True)
class SigningKey:
    """Where a P-256 key lives and its id; the private key itself is read only when signing."""

    name: str
    private_path: Path
    public_path: Path
    key_id: str  # sha256 hex of the public key's PEM (model-signing's key hint)


@dataclass(frozen=True)
class Signed:
    """A written model signature: the file, the key that made it and the files it covers (relative names)."""

    signature: Path
    key_id: str
    files: dict[str, str]  # name -> sha256 hex


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ModuleNotFoundError:
        raise UsageError(f"signing needs the `cryptography` package: {_INSTALL}") from None
    return serialization, ec


def key_paths(name_or_path: str, *, home: Path | None = None) -> tuple[Path, Path]:
    """(private, public) PEM paths of a signing key: a `.pem` path as given, else `<state dir>/keys/NAME.p256.pem`."""
    if name_or_path.endswith(".pem") or os.sep in name_or_path:
        private = Path(name_or_path)
    else:
        private = config.subdir("keys", home=home) / f"{check_name(name_or_path)}.p256.pem"
    return private, private.with_name(private.name.removesuffix(".pem") + ".pub.pem")


def key_id_of(public_pem: bytes) -> str:
    return hashlib.sha256(public_pem).hexdigest()


def _public_pem(public_key: Any) -> bytes:
    serialization, _ = _crypto()
    return bytes(public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def new_signing_key(name: str = DEFAULT_KEY, password: str | None = None, *, home: Path | None = None
                    ) -> SigningKey:
    """Generate a P-256 key, write it encrypted (0600, never overwriting) with its public key beside it."""
    serialization, ec = _crypto()
    password = password_from_env() if password is None else password
    if not password:
        raise SigningKeyError(f"an empty password would leave the signing key unprotected; set {ENV_PASSWORD}")
    private_path, public_path = key_paths(name, home=home)
    private = ec.generate_private_key(ec.SECP256R1())
    data = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.BestAvailableEncryption(password.encode("utf-8")))
    private_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningKeyError(f"{private_path}: a signing key already exists; choose another name") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    public = _public_pem(private.public_key())
    public_path.write_bytes(public)
    return SigningKey(name, private_path, public_path, key_id_of(public))


def show_signing_key(name_or_path: str = DEFAULT_KEY, *, home: Path | None = None) -> SigningKey:
    """A signing key's public part (no password needed)."""
    private_path, public_path = key_paths(name_or_path, home=home)
    return SigningKey(Path(name_or_path).stem, private_path, public_path, key_id_of(load_public_pem(public_path)))


def load_public_pem(path: Path) -> bytes:
    """A P-256 public key (PEM), checked to be one."""
    serialization, ec = _crypto()
    data = read_input(path, missing="no such public key (create a key with `prov signing-key new`)",
                      error=SigningKeyError)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise SigningKeyError(f"{path}: not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise SigningKeyError(f"{path}: not a P-256 (secp256r1) public key")
    return data


def load_private_key(name_or_path: str = DEFAULT_KEY, password: str | None = None, *,
                     home: Path | None = None) -> tuple[Any, SigningKey]:
    """Decrypt a signing key (password: the argument, else `$PROV_KEY_PASSWORD`)."""
    serialization, ec = _crypto()
    private_path, public_path = key_paths(name_or_path, home=home)
    password = password_from_env() if password is None else password
    if password is None:
        raise SigningKeyError(f"{private_path}: set {ENV_PASSWORD} to the signing key's password")
    data = read_input(private_path, missing="no such signing key (create one with `prov signing-key new`)",
                      error=SigningKeyError)
    try:
        key = serialization.load_pem_private_key(data, password.encode("utf-8"))
    except (ValueError, TypeError):
        raise SigningKeyError(f"{private_path}: wrong password or not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SigningKeyError(f"{private_path}: not a P-256 (secp256r1) private key")
    public = _public_pem(key.public_key())
    return key, SigningKey(Path(name_or_path).stem, private_path, public_path, key_id_of(public))


def default_signature(path: Path) -> Path:
    """Where a model's signature goes: beside it, `PATH.sig` (a trailing slash does not matter)."""
    path = Path(os.path.normpath(path))
    return path.with_name(path.name + SIGNATURE_SUFFIX)


def _hashing_config() -> Any:
    from model_signing import hashing

    return hashing.Config().use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)


def sign_model(path: Path, *, key: str = DEFAULT_KEY, password: str | None = None, signature: Path | None = None,
               home: Path | None = None) -> Signed:
    """Write an OpenSSF model signature (model-signing, key-based, offline) over `path`: an adapter or merged model
    directory (every file in it) or one weights file."""
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    if path.is_symlink():
        raise UsageError(f"{path}: a symbolic link; sign the model itself")
    try:
        from model_signing import signing
    except ModuleNotFoundError:
        raise UsageError(f"`prov sign` needs the model-signing library: {_INSTALL}") from None
    _, found = load_private_key(key, password, home=home)
    out = signature or default_signature(path)
    if path.is_dir() and out.resolve().is_relative_to(path.resolve()):
        raise UsageError(f"{out}: write the signature beside the model, not inside it (a file added to the "
                         "directory changes what was signed and what the chain committed)")
    password = password_from_env() if password is None else password
    assert password is not None  # load_private_key refused a missing one
    try:
        # model-signing 1.1.1 hints `str` but hands the password to cryptography, which needs bytes
        secret: Any = password.encode("utf-8")
        signing.Config().use_elliptic_key_signer(private_key=found.private_path, password=secret) \
            .set_hashing_config(_hashing_config()).sign(path, out)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot sign ({one_line(exc)})") from None
    statement = read_signature(out)[1]
    return Signed(out, found.key_id, signed_files(statement, path))


def read_signature(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A model-signing bundle (JSON, bounded) and the in-toto statement in its DSSE envelope, unauthenticated."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SIGNATURE_BYTES + 1)
    except OSError as exc:
        raise FormatError(f"{path}: cannot read the signature ({exc.strerror or exc})") from None
    if len(data) > MAX_SIGNATURE_BYTES:
        raise FormatError(f"{path}: larger than {MAX_SIGNATURE_BYTES} bytes: not a model signature")
    bundle = canonical.load_json(data, source=str(path))
    envelope = bundle.get("dsseEnvelope") if isinstance(bundle, dict) else None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("payload"), str):
        raise FormatError(f"{path}: not a model-signing bundle (no DSSE envelope)")
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
    except ValueError:
        raise FormatError(f"{path}: the signature's payload is not base64") from None
    statement = canonical.load_json(payload, source=f"{path} payload")
    if not isinstance(statement, dict) or statement.get("predicateType") != OMS_PREDICATE \
            or not isinstance(statement.get("predicate"), dict) \
            or not isinstance(statement["predicate"].get("resources"), list):
        raise FormatError(f"{path}: not an OpenSSF model signature ({OMS_PREDICATE})")
    return bundle, statement


def signed_files(statement: dict[str, Any], model: Path) -> dict[str, str]:
    """name -> sha256 hex of every file the statement lists; a one-file model's `.` is named as the statement's
    subject names it (the signed file's name), else as `model`."""
    out: dict[str, str] = {}
    subject = statement.get("subject")
    single = subject[0].get("name") if isinstance(subject, list) and subject and isinstance(subject[0], dict) \
        else None
    for item in statement["predicate"]["resources"]:
        if not isinstance(item, dict) or item.get("algorithm") != "sha256" or not isinstance(item.get("name"), str) \
                or not isinstance(item.get("digest"), str):
            raise FormatError("a model signature resource is not {name, algorithm sha256, digest}")
        name = (single if isinstance(single, str) and single else model.name) if item["name"] == "." else item["name"]
        out[name] = item["digest"]
    return out


def verify_model(path: Path, signature: Path, public_key: Path) -> None:
    """The library's own key-based verification; ValueError (its message) when the model does not match."""
    from model_signing import verifying

    load_public_pem(public_key)
    verifying.Config().use_elliptic_key_verifier(public_key=public_key).verify(path, signature)


# --- what `prov verify` reports about a signature beside the model --------------------------------------------


def verified_files(subject: Any, *, beside: Any = None) -> dict[str, str]:
    """name -> sha256 hex of the files the verifier bound for `subject` (provenance._verify.subject.Subject): a
    directory's files a loader reads (compared with the committed checkpoint), a lone adapter file and the
    adapter_config.json bound beside it, a merged directory's weights and every other file a loader reads (bound by
    `merged_files` when the verdict is VERIFIED; `beside`: those files as the check hashed them, else hashed here), or
    the one file. Files no loader reads (documentation, prov's own `prov-merged.json`) are not bound, not listed."""
    from provenance import mergedir
    from provenance.hashing import hash_file
    from provenance.loaders import WEIGHT_INDEX
    from provenance.manifest import hash_directory

    path = Path(subject.path)
    fileset = getattr(subject, "fileset", None)  # the files a loader reads that the verifier compared (bound)
    if fileset is not None and fileset.entries:
        bound = {e.path: e.digest.value.hex() for e in fileset.entries}
        if not path.is_dir():  # a lone adapter file: its companion adapter_config.json, and the file itself
            bound[path.name] = str(subject.weights_digest).removeprefix("sha256:")
        return bound
    if not path.is_dir():
        return {path.name: str(subject.weights_digest).removeprefix("sha256:")}
    if subject.kind == "merged":
        weights = {Path(f).relative_to(path).as_posix(): d.value.hex()
                   for f, d in zip(subject.files, subject.file_digests, strict=True)}
        others = ({e.path: e.digest.value.hex() for e in beside} if beside is not None else
                  {name: hash_file(path / name).value.hex() for name in mergedir.bound_names(path)})
        # the shard index is bound through the layout check (it may name no file outside the hashed weights)
        index = ({WEIGHT_INDEX: hash_file(path / WEIGHT_INDEX).value.hex()} if (path / WEIGHT_INDEX).is_file()
                 else {})
        return weights | others | index
    return {f.path: f.digest.value.hex() for f in hash_directory(path).files}


def find_signature(path: Path, given: Path | None = None) -> Path | None:
    """The signature to check: `given`, else `PATH.sig` beside the model, else `model.sig` inside a directory (the
    model-signing CLI's default name)."""
    if given is not None:
        return given
    for candidate in (default_signature(path), path / "model.sig" if path.is_dir() else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def signature_section(subject: Any, *, signature: Path | None = None, public_key: Path | None = None
                      ) -> dict[str, Any] | None:
    """The report's `signature` object, or None when no signature was given or found beside the model.

    `valid` is True only when the model-signing library verified the signature with the auditor's `public_key`
    against the files on disk; False when it did not, or the signature is malformed; None when no key was given
    (then `files_match` still says whether the signed digests are those of the files). `covers` is `exact` when the
    signed files are exactly the files the verifier bound, else `partial` (`unsigned` lists bound files the
    signature misses or signs with another digest; `extra` lists signed files the verifier did not bind)."""
    path = Path(subject.path)
    found = find_signature(path, signature)
    if found is None:
        return None
    out: dict[str, Any] = {"file": found.name, "format": OMS_PREDICATE, "key_id": None, "key_checked": False,
                           "valid": None, "files_match": None, "covers": None, "unsigned": [], "extra": [],
                           "reason": None}
    def failed(reason: str) -> dict[str, Any]:  # one line, no local directory (reports are published)
        for local in {str(found.resolve().parent), str(found.parent), str(path.resolve().parent), str(path.parent),
                      str(public_key.parent) if public_key is not None else ""} - {"", "."}:
            reason = reason.replace(local + os.sep, "")
        return out | {"valid": False, "reason": " ".join(reason.split())[:300]}

    if found.is_symlink() or not found.is_file():  # a FIFO or device would block or never end
        return failed(f"{found.name}: not a regular file")
    try:
        bundle, statement = read_signature(found)
        signed = signed_files(statement, path)
    except FormatError as exc:
        return failed(str(exc))
    hint = ((bundle.get("verificationMaterial") or {}).get("publicKey") or {}).get("hint")
    out["key_id"] = hint if isinstance(hint, str) else None
    try:  # informative: nothing here may abort the verification
        bound = verified_files(subject)
        out["files_match"] = _files_match(path, signed)
    except (ProvenanceError, OSError) as exc:
        return failed(f"the model's files could not be read: {exc}")
    out["unsigned"] = sorted(n for n, d in bound.items() if signed.get(n) != d)
    out["extra"] = sorted(n for n in signed if n not in bound)
    out["covers"] = "exact" if not out["unsigned"] and not out["extra"] else "partial"
    if public_key is None:
        out["reason"] = "signer not checked: give the trainer's public key (--signature-key) to check it"
        return out
    out["key_checked"] = True
    try:
        verify_model(path, found, public_key)
    except (ValueError, OSError, UsageError) as exc:
        return failed(str(exc))
    except Exception as exc:  # the library raises its own (protobuf, cryptography) errors for a forged bundle
        return failed(f"{type(exc).__name__}: {exc}")
    return out | {"valid": True}


def _files_match(path: Path, signed: dict[str, str]) -> bool:
    """Whether every signed digest is the digest of the file on disk (names inside `path`, never outside it)."""
    from provenance.hashing import hash_file

    if not path.is_dir():
        return set(signed) == {path.name} and hash_file(path).value.hex() == signed[path.name]
    root = path.resolve()
    for name, digest in signed.items():
        target = (path / name).resolve()
        if not target.is_relative_to(root) or not target.is_file() or hash_file(target).value.hex() != digest:
            return False
    return True


def signature_words(section: dict[str, Any] | None) -> str | None:
    """One line for the human summary and the report's warnings."""
    if section is None:
        return None
    who = f"key {section['key_id'][:16]}…" if section.get("key_id") else "an unnamed key"
    cover = {"exact": "covers exactly the verified files", "partial": "does not cover exactly the verified files"
             }.get(section.get("covers") or "", "")
    if section["valid"] is True:
        return f"model signature {section['file']} checks with {who} and {cover}"
    if section["valid"] is False:
        return f"model signature {section['file']} does NOT check: {section['reason']}"
    return f"model signature {section['file']} by {who} was not checked (no --signature-key); it {cover}"
