"""HMAC-SHA256 (RFC 2104) and HKDF-SHA256 (RFC 5869) on `hashlib.sha256` alone.

MicroPython has no `hmac` module and its hash objects have no `.copy()`, so HMAC is built from
two fresh SHA-256 objects per call. OSCORE only derives keys when a security context is set up,
so speed does not matter here; not keeping key-sized temporaries around does.
"""

import hashlib

_BLOCK = 64  # SHA-256 block size in bytes
_DIGEST = 32


def hmac_sha256(key, data):
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    # One 64-byte pad, flipped from ipad to opad in place: no second key-sized buffer.
    pad = bytearray(_BLOCK)
    pad[: len(key)] = key
    for i in range(_BLOCK):
        pad[i] ^= 0x36
    inner = hashlib.sha256(pad)
    inner.update(data)
    inner_digest = inner.digest()
    for i in range(_BLOCK):
        pad[i] ^= 0x36 ^ 0x5C
    outer = hashlib.sha256(pad)
    outer.update(inner_digest)
    for i in range(_BLOCK):
        pad[i] = 0
    return outer.digest()


def hkdf_extract(salt, ikm):
    # RFC 5869 §2.2: an absent salt is HashLen zero bytes; HMAC pads the key with zeros
    # anyway, so b"" and bytes(32) give the same PRK.
    return hmac_sha256(salt or bytes(_DIGEST), ikm)


def hkdf_expand(prk, info, length):
    if length < 0 or length > 255 * _DIGEST:
        raise ValueError("HKDF: output length out of range")
    out = bytearray()
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac_sha256(prk, block + info + bytes((counter,)))
        out.extend(block)
        counter += 1
    return bytes(out[:length])


def hkdf(salt, ikm, info, length):
    """HKDF-SHA256(salt, IKM, info, L) as RFC 8613 §3.2.1 writes it."""
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)
