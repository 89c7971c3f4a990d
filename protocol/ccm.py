"""AES-CCM-16-64-128 (COSE algorithm 10; RFC 3610 with a 13-byte nonce and an 8-byte tag).

CCM needs only the encrypt direction of AES on single blocks: CBC-MAC for the tag, CTR for the
keystream. That is what both interpreters offer: `cryptolib.aes(key, 1)` (mode 1 is ECB) on
MicroPython, which has no CTR or CCM mode, and the `cryptography` package's AES-ECB on CPython.
The backend is picked at import time; everything above it is the same code on both.

Messages here are tens of bytes, so the work is done a byte at a time in two 16-byte buffers
and one output buffer: no per-block allocation on the node's small heap.
"""


def _micropython_aes():
    try:
        from cryptolib import aes

        return aes
    except ImportError:
        pass
    try:
        from ucryptolib import aes  # older MicroPython firmware

        return aes
    except ImportError:
        return None


_aes = _micropython_aes()

NONCE_LEN = 13
TAG_LEN = 8
KEY_LEN = 16
_L = 15 - NONCE_LEN  # bytes of the message-length field (2: messages up to 65535 bytes)
_MAX_LEN = (1 << (8 * _L)) - 1
# RFC 3610 §2.2 flags: Adata bit, M' = (M - 2) / 2 in bits 3..5, L' = L - 1 in bits 0..2
_FLAGS_B0 = ((TAG_LEN - 2) // 2) << 3 | (_L - 1)
_FLAGS_A = _L - 1


class TagMismatch(ValueError):
    """The authentication tag does not verify: wrong key, wrong nonce or altered data."""


if _aes is not None:

    def block_cipher(key):
        """AES-128 in the encrypt direction; `.encrypt(src, dst)` writes one block."""
        if len(key) != KEY_LEN:
            raise ValueError("AES-CCM-16-64-128 needs a 16-byte key")
        return _aes(key, 1)

else:
    # CPython: the `cryptography` package (always installed on the gateway side)
    from cryptography.hazmat.primitives.ciphers import (  # type: ignore
        Cipher,
        algorithms,
        modes,
    )

    class _ECB:
        def __init__(self, key):
            self._enc = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()

        def encrypt(self, src, dst):
            dst[:] = self._enc.update(bytes(src))
            return dst

    def block_cipher(key):
        """AES-128 in the encrypt direction; `.encrypt(src, dst)` writes one block."""
        if len(key) != KEY_LEN:
            raise ValueError("AES-CCM-16-64-128 needs a 16-byte key")
        return _ECB(key)


def _absorb(aes, x, pos, data):
    # CBC-MAC over a virtual stream: XOR each byte into the running block x, encrypting
    # whenever 16 bytes have gone in. Returns the new stream position.
    for b in data:
        x[pos] ^= b
        pos += 1
        if pos == 16:
            aes.encrypt(x, x)
            pos = 0
    return pos


def _cbc_mac(aes, nonce, aad, msg, x):
    n = len(msg)
    x[0] = _FLAGS_B0 | (0x40 if aad else 0)
    x[1:14] = nonce
    x[14] = n >> 8
    x[15] = n & 0xFF
    aes.encrypt(x, x)
    if aad:
        a = len(aad)
        # RFC 3610 §2.2: a length below 2^16 - 2^8 is encoded in two bytes; OSCORE's AAD
        # is a few dozen bytes, so the longer forms are not needed.
        if a >= 0xFF00:
            raise ValueError("AES-CCM: additional data too long")
        x[0] ^= a >> 8
        x[1] ^= a & 0xFF
        pos = _absorb(aes, x, 2, aad)
        if pos:
            aes.encrypt(x, x)
    if msg and _absorb(aes, x, 0, msg):
        aes.encrypt(x, x)
    return x


def _counter_block(a, nonce, i):
    a[0] = _FLAGS_A
    a[1:14] = nonce
    a[14] = i >> 8
    a[15] = i & 0xFF


def _ctr(aes, nonce, src, dst, s):
    # dst[j] = src[j] XOR E(A_(1 + j // 16))[j % 16]; s is scratch, encrypted in place
    i = 0
    n = len(src)
    counter = 1
    while i < n:
        _counter_block(s, nonce, counter)
        aes.encrypt(s, s)
        j = 0
        while j < 16 and i < n:
            dst[i] = src[i] ^ s[j]
            i += 1
            j += 1
        counter += 1


def _check(nonce, n):
    if len(nonce) != NONCE_LEN:
        raise ValueError("AES-CCM: the nonce must be 13 bytes")
    if n > _MAX_LEN:
        raise ValueError("AES-CCM: message too long")


def encrypt(aes, nonce, plaintext, aad):
    """Ciphertext followed by the 8-byte tag. `aes` comes from `block_cipher(key)`."""
    n = len(plaintext)
    _check(nonce, n)
    x = bytearray(16)
    s = bytearray(16)
    _cbc_mac(aes, nonce, aad, plaintext, x)
    out = bytearray(n + TAG_LEN)
    _ctr(aes, nonce, plaintext, out, s)
    _counter_block(s, nonce, 0)
    aes.encrypt(s, s)
    for j in range(TAG_LEN):
        out[n + j] = x[j] ^ s[j]
    return bytes(out)


def decrypt(aes, nonce, data, aad):
    """The plaintext, or `TagMismatch` if the tag does not verify."""
    n = len(data) - TAG_LEN
    if n < 0:
        raise TagMismatch("AES-CCM: shorter than the tag")
    _check(nonce, n)
    x = bytearray(16)
    s = bytearray(16)
    plain = bytearray(n)
    _ctr(aes, nonce, memoryview(data)[:n], plain, s)
    _cbc_mac(aes, nonce, aad, plain, x)
    _counter_block(s, nonce, 0)
    aes.encrypt(s, s)
    # Constant time: look at every tag byte whatever the first difference.
    diff = 0
    for j in range(TAG_LEN):
        diff |= data[n + j] ^ x[j] ^ s[j]
    if diff:
        for j in range(n):
            plain[j] = 0
        raise TagMismatch("AES-CCM: authentication tag mismatch")
    return bytes(plain)
