"""SOPS-encrypted benchmark claims, made fast enough for 10,000 files (S7).

The real `sops` CLI takes tens of milliseconds a file, so S7's 10k claims are
encrypted here in the format `sops --encrypt --age R --encrypted-regex
'^secrets$'` writes: a fresh 32-byte data key per file, wrapped for the age
recipient (an age v1 file with one X25519 stanza, armored), the secret as
`ENC[AES256_GCM,...]` with its key path as additional data, and the MAC
(SHA-512 over every non-null value in document order, encrypted with the
data key, `lastmodified` as additional data). The bench checks a sample of
them with `sops --decrypt`, the peer, so the format is the real one.
Needs the `cryptography` package.
"""

import base64
import datetime
import hashlib
import hmac
import json
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def bech32_decode(text):
    """The data of a Bech32 string (no checksum check: the key comes from age-keygen)."""
    data = [CHARSET.index(c) for c in text.lower().rsplit("1", 1)[1][:-6]]
    acc, bits, out = 0, 0, bytearray()
    for v in data:
        acc = (acc << 5) | v
        bits += 5
        while bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    return bytes(out)


def _hkdf(ikm, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _b64(b):
    return base64.b64encode(b).decode().rstrip("=")


def age_encrypt(recipient, plaintext):
    """An armored age v1 file of `plaintext` for one X25519 recipient (`age1...`)."""
    their = bech32_decode(recipient)
    file_key = os.urandom(16)
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes_raw()
    shared = eph.exchange(X25519PublicKey.from_public_bytes(their))
    wrap = _hkdf(shared, eph_pub + their, b"age-encryption.org/v1/X25519")
    body = ChaCha20Poly1305(wrap).encrypt(b"\x00" * 12, file_key, None)
    header = f"age-encryption.org/v1\n-> X25519 {_b64(eph_pub)}\n{_b64(body)}\n---"
    mac = hmac.new(_hkdf(file_key, None, b"header"), header.encode(), hashlib.sha256).digest()
    header += f" {_b64(mac)}\n"
    nonce = os.urandom(16)
    payload = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload")).encrypt(b"\x00" * 11 + b"\x01", plaintext, None)
    armored = base64.b64encode(header.encode() + nonce + payload).decode()
    lines = [armored[i:i + 64] for i in range(0, len(armored), 64)]
    return "-----BEGIN AGE ENCRYPTED FILE-----\n" + "\n".join(lines) + "\n-----END AGE ENCRYPTED FILE-----\n"


def enc_value(key, plaintext, additional, kind="str"):
    iv = os.urandom(32)
    sealed = AESGCM(key).encrypt(iv, plaintext, additional.encode())
    data, tag = sealed[:-16], sealed[-16:]
    return (f"ENC[AES256_GCM,data:{base64.b64encode(data).decode()},iv:{base64.b64encode(iv).decode()},"
            f"tag:{base64.b64encode(tag).decode()},type:{kind}]")


def _leaves(value, out):
    if isinstance(value, dict):
        for v in value.values():
            _leaves(v, out)
    elif isinstance(value, list):
        for v in value:
            _leaves(v, out)
    elif value is None:
        pass
    elif isinstance(value, bool):
        out.append(b"True" if value else b"False")
    else:
        out.append(str(value).encode())


def encrypt_claim(claim, yaml_text, recipient, secret):
    """(YAML, JSON) of `claim` (its YAML twin `yaml_text`) with `secrets:
    {db_password: secret}` appended, encrypted as sops would."""
    key = os.urandom(32)
    leaves = []
    _leaves(claim, leaves)
    value = enc_value(key, secret.encode(), "secrets:db_password:")
    leaves.append(secret.encode())
    mac = hashlib.sha512(b"".join(leaves)).hexdigest().upper()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    enc = age_encrypt(recipient, key)
    sops = {
        "age": [{"recipient": recipient, "enc": enc}],
        "lastmodified": now,
        "mac": enc_value(key, mac.encode(), now),
        "encrypted_regex": "^secrets$",
        "version": "3.13.3",
    }
    enc_block = "".join(f"                {line}\n" for line in enc.splitlines())
    yaml = (yaml_text + "secrets:\n    db_password: " + value + "\nsops:\n    age:\n        - recipient: "
            + recipient + "\n          enc: |\n" + enc_block + f'    lastmodified: "{now}"\n    mac: '
            + sops["mac"] + "\n    encrypted_regex: ^secrets$\n    version: 3.13.3\n")
    doc = dict(claim)
    doc["secrets"] = {"db_password": value}
    doc["sops"] = sops
    return yaml, json.dumps(doc, indent=2) + "\n"
