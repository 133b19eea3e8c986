"""Signatures of exported bundles: a site signs the zip it sends with its Ed25519 key, the receiving
site checks the signature against the public keys it trusts before anything else.

    ssh-keygen -t ed25519 -f site_key -C "Hospital A, KD bundles"     # once per site (docs/signing.md)
    python -m tools.bundle.export export bundles/X --out dist --sign site_key
    python -m tools.bundle.export verify dist/X_v1.0.0.zip --trusted trusted_keys --strict

Keys are OpenSSH Ed25519 keys, which hospitals' IT already issues and rotates; the signature is
made and checked with the ``cryptography`` package (no cryptography of our own). The signed
payload is the manifest's header line (bundle name, version, vendored ``common``) and the SHA-256
of ``MANIFEST.sha256``, which holds the SHA-256 of every other file: signing the manifest signs
every config, script, vendored module and weight. The signature travels beside the zip as
``<zip>.sig`` (text: the payload, the signing key's fingerprint as ``ssh-keygen -l`` prints it,
and the signature in base64). The trusted keys are a file of OpenSSH public keys, one per line
(``authorized_keys`` format; ``#`` comments and blank lines ignored).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import zipfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_ssh_private_key,
    load_ssh_public_key,
)

from tools.bundle.files import write_atomic

HEADER = "kd-bundle-signature 1"
MANIFEST = "MANIFEST.sha256"


def fingerprint(key: Ed25519PublicKey) -> str:
    """``SHA256:...``, the fingerprint ``ssh-keygen -l`` prints for the key."""
    blob = base64.b64decode(key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def payload(zip_bytes: bytes) -> str:
    """What is signed: the manifest's header (name, version, vendored common) and its SHA-256."""
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        manifests = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/" + MANIFEST)]
        if len(manifests) != 1:
            raise ValueError(f"expected one <bundle>/{MANIFEST} in the zip, found {manifests}")
        manifest = archive.read(manifests[0])
    header = manifest.decode().splitlines()[0] if manifest else ""
    return f"{HEADER}\n{header}\nmanifest-sha256 {hashlib.sha256(manifest).hexdigest()}\n"


def sign(zip_path: Path, private_key: Path) -> Path:
    """Write ``<zip>.sig`` for ``zip_path`` with the OpenSSH Ed25519 ``private_key`` (unencrypted,
    or encrypted with the passphrase in ``KD_BUNDLE_KEY_PASSPHRASE``)."""
    passphrase = os.environ.get("KD_BUNDLE_KEY_PASSPHRASE")
    key = load_ssh_private_key(private_key.read_bytes(), passphrase.encode() if passphrase else None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{private_key} is a {type(key).__name__}; sign with an Ed25519 key (ssh-keygen -t ed25519).")
    text = payload(zip_path.read_bytes())
    signature = base64.b64encode(key.sign(text.encode())).decode()
    out = Path(f"{zip_path}.sig")
    write_atomic(out, f"{text}key {fingerprint(key.public_key())}\nsignature {signature}\n".encode())
    return out


def trusted_keys(path: Path) -> dict[str, tuple[Ed25519PublicKey, str]]:
    """``{fingerprint: (key, comment)}`` of a file of OpenSSH public keys."""
    keys = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            key = load_ssh_public_key(" ".join(line.split()[:2]).encode())
        except ValueError as e:
            raise ValueError(f"{path}, line {number}: not an OpenSSH public key ({e})") from e
        if isinstance(key, Ed25519PublicKey):
            keys[fingerprint(key)] = (key, " ".join(line.split()[2:]))
    return keys


def check(zip_path: Path, trusted: Path | None, strict: bool = False) -> list[str]:
    """What is wrong with the signature of ``zip_path`` (empty: signed by a trusted key, or unsigned
    and not ``strict``)."""
    signature_file = Path(f"{zip_path}.sig")
    if not signature_file.is_file():
        return [f"unsigned: no {signature_file.name} beside the zip (refused in strict mode)"] if strict else []
    if trusted is None:
        return [f"{signature_file.name} is there but no --trusted keys were given to check it against"]
    lines = signature_file.read_text().splitlines()
    fields = dict(line.split(" ", 1) for line in lines[3:] if " " in line)
    try:
        expected = payload(zip_path.read_bytes())
    except (ValueError, zipfile.BadZipFile) as e:
        return [f"cannot compute the signed payload: {e}"]
    if "\n".join(lines[:3]) + "\n" != expected:
        return [f"{signature_file.name} signs another manifest or bundle version than this zip holds"]
    keys = trusted_keys(trusted)
    if fields.get("key") not in keys:
        return [f"signed by key {fields.get('key')}, which is not in {trusted} ({len(keys)} trusted key(s))"]
    key, owner = keys[fields["key"]]
    try:
        key.verify(base64.b64decode(fields.get("signature", "")), expected.encode())
    except (InvalidSignature, ValueError):
        return [f"the signature does not match its payload for key {fields['key']} ({owner})"]
    return []
