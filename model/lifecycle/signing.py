"""Ed25519 signatures over snapshots (the `cryptography` package).

What is signed is the statement `upm-snapshot-v1|<snapshot_id>|<sha256 of the stored bytes>`,
so a signature binds a name to exact bytes. A signature is written as
`ed25519:<key id>:<base64 signature>`, the key id being the first 16 hex digits of the sha256
of the raw public key, so a verifier holding several public keys (rotation) picks the right one.

Keys come from files (PEM, PKCS#8 private / SubjectPublicKeyInfo public) named by environment
variables: `UPM_SIGNING_KEY_FILE` for the job that writes snapshots, `UPM_VERIFY_KEY_FILES`
(one or more paths separated by ':') for promotion and adapters. `UPM_SIGNING_KEY` /
`UPM_VERIFY_KEYS` may hold the PEM text itself.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (Ed25519PrivateKey,
                                                               Ed25519PublicKey)


class SignatureError(ValueError):
    """Missing, malformed, unknown-key or invalid signature."""


def statement(snapshot_id: str, sha256: str) -> bytes:
    return f"upm-snapshot-v1|{snapshot_id}|{sha256}".encode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    private: Ed25519PrivateKey

    @property
    def key_id(self) -> str:
        return key_id(self.private.public_key())

    def sign(self, snapshot_id: str, sha256: str) -> str:
        sig = self.private.sign(statement(snapshot_id, sha256))
        return f"ed25519:{self.key_id}:{base64.b64encode(sig).decode()}"

    @classmethod
    def from_pem(cls, pem: bytes) -> "Signer":
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError("the signing key is not an Ed25519 private key")
        return cls(key)

    @classmethod
    def from_env(cls, env=os.environ) -> "Signer | None":
        if env.get("UPM_SIGNING_KEY"):
            return cls.from_pem(env["UPM_SIGNING_KEY"].encode())
        if env.get("UPM_SIGNING_KEY_FILE"):
            return cls.from_pem(Path(env["UPM_SIGNING_KEY_FILE"]).read_bytes())
        return None


@dataclass(frozen=True)
class Verifier:
    keys: dict[str, Ed25519PublicKey]

    def verify(self, snapshot_id: str, sha256: str, signature: str | None) -> str:
        """Return the key id that signed, or raise SignatureError saying what is wrong."""
        if not signature:
            raise SignatureError(f"{snapshot_id} is unsigned")
        try:
            algo, kid, b64 = signature.split(":", 2)
            sig = base64.b64decode(b64, validate=True)
        except ValueError:
            raise SignatureError(f"{snapshot_id}: malformed signature") from None
        if algo != "ed25519":
            raise SignatureError(f"{snapshot_id}: unsupported signature algorithm {algo!r}")
        key = self.keys.get(kid)
        if key is None:
            raise SignatureError(f"{snapshot_id}: signed by unknown key {kid} "
                                 f"(trusted: {', '.join(sorted(self.keys)) or 'none'})")
        try:
            key.verify(sig, statement(snapshot_id, sha256))
        except InvalidSignature:
            raise SignatureError(f"{snapshot_id}: signature does not match its sha256 "
                                 f"{sha256[:12]}… (tampered or re-labelled)") from None
        return kid

    @classmethod
    def from_pems(cls, pems: list[bytes]) -> "Verifier":
        keys = {}
        for pem in pems:
            key = serialization.load_pem_public_key(pem)
            if not isinstance(key, Ed25519PublicKey):
                raise SignatureError("a verify key is not an Ed25519 public key")
            keys[key_id(key)] = key
        return cls(keys)

    @classmethod
    def from_env(cls, env=os.environ) -> "Verifier":
        pems = []
        if env.get("UPM_VERIFY_KEYS"):
            text = env["UPM_VERIFY_KEYS"]
            marker = "-----END PUBLIC KEY-----"
            pems += [(p + marker).encode() for p in text.split(marker) if p.strip()]
        for path in filter(None, env.get("UPM_VERIFY_KEY_FILES", "").split(":")):
            pems.append(Path(path).read_bytes())
        return cls.from_pems(pems)


def generate_keypair(directory: str | os.PathLike, name: str = "upm") -> tuple[Path, Path]:
    """Write `<name>.key` (private, mode 0600) and `<name>.pub` into `directory`."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    priv = d / f"{name}.key"
    pub = d / f"{name}.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(priv, 0o600)
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub
