"""Ed25519 signatures on site packages: a site signs, the coordinator verifies against keys it registered.

Why: the manifest's SHA-256 checksums detect corruption, not forgery; anyone who edits
``pooling/statistics.json`` can recompute them (issue 16, 4). The site signs the manifest bytes with
its private key; the manifest lists the SHA-256 of every other file, so the signature covers the
whole package. The signature travels as ``signature.json`` (``algorithm``, ``site_id``, ``key_id``,
``signature`` in hex: hex never looks like a date to the package scanner).

Keys (docs/federated.md, "Package signatures"): ``blina site-key`` writes ``<site>.key`` (PKCS#8
PEM, file mode 0600, encrypted when ``BLINA_KEY_PASSPHRASE`` is set) and ``<site>.pub``
(SubjectPublicKeyInfo PEM). The coordinator registers public keys as files in a folder:
``<site_id>.pub`` or ``<site_id>.<label>.pub`` (several per site during a rotation).

Library: ``cryptography`` (pyca, maintained, OpenSSL-backed Ed25519); signing and verifying a
package manifest take well under a millisecond, so no measurement is needed to choose between it and
PyNaCl; it is the one the vantage6 stack also pins.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from blina_study.adapter.errors import BlinaError

__all__ = [
    "SIGNATURE",
    "SigningError",
    "generate_site_key",
    "key_id",
    "load_registry",
    "sign_manifest",
    "verify_signature",
]

SIGNATURE = "signature.json"
ALGORITHM = "ed25519"
PASSPHRASE_ENV = "BLINA_KEY_PASSPHRASE"
_SITE_FILE = re.compile(r"^(?P<site>[A-Za-z0-9_-]+)(\.[A-Za-z0-9_-]+)?\.pub$")


class SigningError(BlinaError, ValueError):
    """A key cannot be made, read or used, or a signature does not verify; the message names the fix."""


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:  # pragma: no cover - a declared dependency
        raise SigningError("package signatures need the 'cryptography' package",
                           hint="pip install -c constraints.txt cryptography") from None
    return serialization, ed25519, InvalidSignature


def _raw_public(public_key: Any) -> bytes:
    serialization, _, _ = _crypto()
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Any) -> str:
    """First 16 hex digits of the SHA-256 of the raw 32-byte public key (names the key, not secret)."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def generate_site_key(site_id: str, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``<site_id>.key`` (private, 0600) and ``<site_id>.pub`` into ``out_dir``; refuse to
    overwrite an existing key (a lost private key is a rotation, not an overwrite)."""
    serialization, ed25519, _ = _crypto()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / f"{site_id}.key", out / f"{site_id}.pub"
    for p in (private_path, public_path):
        if p.exists():
            raise SigningError(f"{p} exists; keys are never overwritten",
                               hint="to rotate, write the new key to another folder and register its .pub "
                               "beside the old one (docs/federated.md)")  # fmt: skip
    key = ed25519.Ed25519PrivateKey.generate()
    passphrase = os.environ.get(PASSPHRASE_ENV)
    encryption = (serialization.BestAvailableEncryption(passphrase.encode("utf-8")) if passphrase
                  else serialization.NoEncryption())  # fmt: skip
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path


def _load_private(path: str | Path) -> Any:
    serialization, ed25519, _ = _crypto()
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise SigningError(f"signing key {p}: cannot be read ({exc.strerror})",
                           hint="give the .key file written by blina site-key") from None
    passphrase = os.environ.get(PASSPHRASE_ENV)
    try:
        key = serialization.load_pem_private_key(data, password=passphrase.encode("utf-8") if passphrase else None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"signing key {p}: not a usable private key ({exc})",
                           hint=f"give the .key file written by blina site-key; set {PASSPHRASE_ENV} if it is "
                           "encrypted") from None  # fmt: skip
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SigningError(f"signing key {p}: not an Ed25519 key", hint="make one with blina site-key")
    return key


def sign_manifest(manifest: bytes, site_id: str, private_key_path: str | Path) -> bytes:
    """``signature.json`` bytes: the site's Ed25519 signature of the manifest bytes."""
    key = _load_private(private_key_path)
    doc = {"algorithm": ALGORITHM, "site_id": site_id, "key_id": key_id(key.public_key()),
           "signed": "manifest.json", "signature": key.sign(manifest).hex()}  # fmt: skip
    return json.dumps(doc, indent=1, sort_keys=True).encode("utf-8")


def load_registry(path: str | Path) -> dict[str, dict[str, Any]]:
    """The coordinator's registered keys: ``{site_id: {key_id: public_key}}`` from a folder of
    ``<site_id>.pub`` / ``<site_id>.<label>.pub`` files (or one such file)."""
    serialization, ed25519, _ = _crypto()
    p = Path(path)
    files = sorted(p.glob("*.pub")) if p.is_dir() else [p]
    if not p.exists() or not files:
        raise SigningError(f"--keys {p}: no registered public key (<site_id>.pub files)",
                           hint="register each site's .pub file from blina site-key in that folder")
    out: dict[str, dict[str, Any]] = {}
    for f in files:
        m = _SITE_FILE.match(f.name)
        if not m:
            raise SigningError(f"{f}: a registered key is named <site_id>.pub or <site_id>.<label>.pub",
                               hint="rename the file after the site it belongs to")  # fmt: skip
        try:
            key = serialization.load_pem_public_key(f.read_bytes())
        except (ValueError, OSError) as exc:
            raise SigningError(f"{f}: not a PEM public key ({exc})", hint="register the .pub file of blina site-key") \
                from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise SigningError(f"{f}: not an Ed25519 public key", hint="register the .pub file of blina site-key")
        out.setdefault(m.group("site"), {})[key_id(key)] = key
    return out


def verify_signature(manifest: bytes, signature: bytes | None, site_id: str,
                     registry: dict[str, dict[str, Any]]) -> str:
    """Raise ``SigningError`` unless ``signature`` (``signature.json`` bytes) is a valid Ed25519
    signature of ``manifest`` by a key registered for ``site_id``; return the key id."""
    _, _, InvalidSignature = _crypto()
    if signature is None:
        raise SigningError(f"no {SIGNATURE}: the package is not signed",
                           hint=f"ask site {site_id!r} to run blina site-run --sign-key <its .key>")
    try:
        doc = json.loads(signature.decode("utf-8"))
        sig = bytes.fromhex(doc["signature"])
        kid = str(doc["key_id"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise SigningError(f"{SIGNATURE} is not a signature document", hint="ask the site to resend the package") \
            from None
    if doc.get("algorithm") != ALGORITHM or doc.get("site_id") != site_id:
        raise SigningError(f"{SIGNATURE} is for {doc.get('site_id')!r} ({doc.get('algorithm')!r}), the manifest says "
                           f"{site_id!r}", hint="the package was altered; ask the site to resend it")
    keys = registry.get(site_id)
    if not keys:
        raise SigningError(f"no public key registered for site {site_id!r}",
                           hint=f"register {site_id}.pub (from the site's blina site-key) in the --keys folder")
    key = keys.get(kid)
    if key is None:
        raise SigningError(f"signed with key {kid}, which is not registered for site {site_id!r}",
                           hint="register the site's current .pub (after a rotation) or ask the site which key "
                           "it used")  # fmt: skip
    try:
        key.verify(sig, manifest)
    except InvalidSignature:
        raise SigningError(f"the signature of site {site_id!r} does not match the package's manifest",
                           hint="the package was altered after signing; do not pool it, ask the site to "
                           "resend it") from None
    return kid
