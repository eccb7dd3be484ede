"""Ed25519 keys: who signed an alert, a decision or an audit checkpoint.

Three kinds of signer, one format:

* an **edge** signs every alert it publishes (its key file on the gateway, no passphrase:
  the gateway starts unattended; the file is ``0600``);
* an **operator** signs every decision at the console; the private key is encrypted with
  the operator's PIN or passphrase (scrypt + AES-GCM), so the file alone signs nothing;
* the **engine** signs checkpoints of its audit chain and, when no operators are
  configured, the decisions of its own local console.

Whoever verifies keeps only public keys (``ed25519:<base64>``) in its configuration: the
engine's trust list of edges, the policy's operators.

A key file is JSON::

    {"aiotflow_key": 1, "name": "ana", "public_key": "ed25519:...",
     "kdf": {"name": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": "..."},
     "nonce": "...", "private": "..."}          # encrypted; no "kdf": plain

The PIN cost of a guess is one scrypt (~0.1 s, 32 MiB here): six digits stop a person at
the console (who is also locked out after a few wrong tries), not an attacker who copied
the file; give operators passphrases where the key file may leave their account.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator

from .files import private_dir, write_private

__all__ = [
    "KeyFileError",
    "PublicKey",
    "SigningKey",
    "WrongPassphrase",
    "generate_key",
    "key_id",
    "load_key",
    "load_or_create_key",
    "parse_public_key",
    "save_key",
    "verify_signature",
]

_PREFIX = "ed25519:"
#: scrypt cost of an encrypted key file (n, r, p)
DEFAULT_COST = (2**15, 8, 1)


class KeyFileError(Exception):
    """A key file or public key that cannot be used (missing, malformed, wrong kind)."""


class WrongPassphrase(KeyFileError):
    """The PIN or passphrase does not open this key file."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


def parse_public_key(text: str) -> Any:
    """An ``ed25519:<base64>`` public key as a cryptography object (``KeyFileError`` if not
    one)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not isinstance(text, str) or not text.startswith(_PREFIX):
        raise KeyFileError("a public key looks like ed25519:<base64>")
    try:
        raw = _unb64(text[len(_PREFIX):])
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise KeyFileError(f"not an Ed25519 public key: {exc}") from None


def _valid_public_key(text: str) -> str:
    try:
        parse_public_key(text)
    except KeyFileError as exc:
        raise ValueError(str(exc)) from None
    return text


#: a configuration field holding an ``ed25519:<base64>`` public key, checked at load
PublicKey = Annotated[str, AfterValidator(_valid_public_key)]


def key_id(public_key: str) -> str:
    """A short fingerprint of a public key (16 hex digits), for logs and trust lists."""
    return hashlib.sha256(public_key.encode()).hexdigest()[:16]


def verify_signature(public_key: str | Any, data: bytes, signature: str) -> bool:
    """Whether ``signature`` (base64) is ``public_key``'s signature of ``data``."""
    from cryptography.exceptions import InvalidSignature

    key = parse_public_key(public_key) if isinstance(public_key, str) else public_key
    try:
        key.verify(_unb64(signature), data)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class SigningKey:
    """A private key in memory and the name it signs as."""

    name: str
    private: Any  # Ed25519PrivateKey

    @property
    def public_key(self) -> str:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return _PREFIX + _b64(raw)

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def sign(self, data: bytes) -> str:
        """The base64 signature of ``data``."""
        return _b64(self.private.sign(data))

    def __repr__(self) -> str:  # never the private half
        return f"SigningKey(name={self.name!r}, key_id={self.key_id!r})"


def generate_key(name: str) -> SigningKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return SigningKey(name, Ed25519PrivateKey.generate())


def _kdf(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def save_key(key: SigningKey, path: str | Path, *, passphrase: str | None = None,
             cost: tuple[int, int, int] = DEFAULT_COST) -> Path:
    """Write ``key`` to ``path`` (``0600``, its directory ``0700``), encrypted with
    ``passphrase`` when given."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    p = Path(path)
    private_dir(p.parent)
    raw = key.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    doc: dict[str, Any] = {"aiotflow_key": 1, "name": key.name, "public_key": key.public_key}
    if passphrase is None:
        doc["private"] = _b64(raw)
    else:
        n, r, par = cost
        salt, nonce = os.urandom(16), os.urandom(12)
        secret = _kdf(passphrase, salt, n, r, par)
        doc["kdf"] = {"name": "scrypt", "n": n, "r": r, "p": par, "salt": _b64(salt)}
        doc["nonce"] = _b64(nonce)
        doc["private"] = _b64(AESGCM(secret).encrypt(nonce, raw, key.public_key.encode()))
    return write_private(p, (json.dumps(doc, indent=2) + "\n").encode())


def _read(p: Path) -> dict[str, Any]:
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise KeyFileError(f"no key file {p}") from None
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{p} is not an aiotflow key file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("aiotflow_key") != 1:
        raise KeyFileError(f"{p} is not an aiotflow key file")
    return doc


def load_key(path: str | Path, *, passphrase: str | None = None) -> SigningKey:
    """Read a key file; an encrypted one needs its ``passphrase`` (:class:`WrongPassphrase`
    when it does not open it)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    p = Path(path)
    doc = _read(p)
    try:
        blob = _unb64(doc["private"])
        if "kdf" in doc:
            if passphrase is None:
                raise WrongPassphrase(f"{p} is encrypted: a PIN or passphrase is needed")
            kdf = doc["kdf"]
            if kdf.get("name") != "scrypt":
                raise KeyFileError(f"{p}: unknown key derivation {kdf.get('name')!r}")
            secret = _kdf(passphrase, _unb64(kdf["salt"]), int(kdf["n"]), int(kdf["r"]),
                          int(kdf["p"]))
            try:
                blob = AESGCM(secret).decrypt(_unb64(doc["nonce"]), blob,
                                              str(doc["public_key"]).encode())
            except InvalidTag:
                raise WrongPassphrase(f"wrong PIN or passphrase for {p}") from None
        key = SigningKey(str(doc.get("name") or p.stem),
                         Ed25519PrivateKey.from_private_bytes(blob))
    except (KeyError, TypeError, ValueError) as exc:
        raise KeyFileError(f"{p} is not an aiotflow key file: {exc}") from None
    if key.public_key != doc.get("public_key"):
        raise KeyFileError(f"{p}: its private and public halves do not match")
    return key


def load_or_create_key(path: str | Path, name: str) -> SigningKey:
    """The unencrypted machine key at ``path`` (an engine's, an edge's), made on first use.

    Two processes starting at once agree on one key: the new file is linked into place,
    which fails if the other process was first, and then that one's key is read."""
    p = Path(path)
    if p.exists():
        return load_key(p)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.new")
    save_key(generate_key(name), tmp)
    try:
        os.link(tmp, p)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return load_key(p)
