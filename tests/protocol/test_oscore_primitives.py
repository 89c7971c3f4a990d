"""HKDF-SHA256 and AES-CCM-16-64-128 against published vectors and independent implementations."""

import hashlib
import hmac
import random

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

h = bytes.fromhex

# RFC 5869 Appendix A, test cases 1 and 3 (SHA-256): (IKM, salt, info, L, PRK, OKM)
RFC5869 = [
    (
        b"\x0b" * 22,
        h("000102030405060708090a0b0c"),
        h("f0f1f2f3f4f5f6f7f8f9"),
        42,
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    (
        b"\x0b" * 22,
        b"",
        b"",
        42,
        "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
]


@pytest.mark.parametrize("case", RFC5869, ids=["A.1", "A.3"])
def test_hkdf_rfc5869(interp, case):
    hkdf = interp.module("protocol.hkdf")
    ikm, salt, info, length, prk, okm = case
    assert hkdf.hkdf_extract(salt, ikm).hex() == prk
    assert hkdf.hkdf(salt, ikm, info, length).hex() == okm


def test_hmac_and_hkdf_match_cpython_and_cryptography(interp):
    hkdf = interp.module("protocol.hkdf")
    rng = random.Random(5869)
    for key_len in (0, 1, 16, 32, 63, 64, 65, 100):
        key = rng.randbytes(key_len)
        data = rng.randbytes(rng.randrange(0, 200))
        assert hkdf.hmac_sha256(key, data) == hmac.new(key, data, hashlib.sha256).digest()
    for length in (1, 13, 16, 32, 33, 100):
        salt, ikm, info = rng.randbytes(8), rng.randbytes(16), rng.randbytes(12)
        expected = HKDF(hashes.SHA256(), length, salt, info).derive(ikm)
        assert hkdf.hkdf(salt, ikm, info, length) == expected


# RFC 3610 §8 packet vectors 1-5 (M = 8, L = 2: exactly AES-CCM-16-64-128's parameters)
RFC3610 = [
    (
        "00000003020100a0a1a2a3a4a5",
        "0001020304050607",
        "08090a0b0c0d0e0f101112131415161718191a1b1c1d1e",
        "588c979a61c663d2f066d0c2c0f989806d5f6b61dac384" + "17e8d12cfdf926e0",
    ),
    (
        "00000004030201a0a1a2a3a4a5",
        "0001020304050607",
        "08090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "72c91a36e135f8cf291ca894085c87e3cc15c439c9e43a3b" + "a091d56e10400916",
    ),
    (
        "00000005040302a0a1a2a3a4a5",
        "0001020304050607",
        "08090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
        "51b1e5f44a197d1da46b0f8e2d282ae871e838bb64da859657" + "4adaa76fbd9fb0c5",
    ),
    (
        "00000006050403a0a1a2a3a4a5",
        "000102030405060708090a0b",
        "0c0d0e0f101112131415161718191a1b1c1d1e",
        "a28c6865939a9a79faaa5c4c2a9d4a91cdac8c" + "96c861b9c9e61ef1",
    ),
    (
        "00000007060504a0a1a2a3a4a5",
        "000102030405060708090a0b",
        "0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "dcf1fb7b5d9e23fb9d4e131253658ad86ebdca3e" + "51e83f077d9c2d93",
    ),
]
RFC3610_KEY = h("c0c1c2c3c4c5c6c7c8c9cacbcccdcecf")


@pytest.mark.parametrize("case", RFC3610, ids=[f"packet {i}" for i in range(1, 6)])
def test_ccm_rfc3610(interp, case):
    ccm = interp.module("protocol.ccm")
    nonce, aad, plain, sealed = (h(x) for x in case)
    aes = ccm.block_cipher(RFC3610_KEY)
    assert ccm.encrypt(aes, nonce, plain, aad) == sealed
    assert ccm.decrypt(aes, nonce, sealed, aad) == plain


def test_ccm_matches_cryptography_aesccm(interp):
    ccm = interp.module("protocol.ccm")
    rng = random.Random(3610)
    # Lengths around the 16-byte block edges, with and without AAD and plaintext.
    for plain_len in (0, 1, 15, 16, 17, 31, 32, 33, 64, 200):
        for aad_len in (0, 1, 14, 15, 16, 30, 47):
            key, nonce = rng.randbytes(16), rng.randbytes(13)
            plain, aad = rng.randbytes(plain_len), rng.randbytes(aad_len)
            expected = AESCCM(key, tag_length=8).encrypt(nonce, plain, aad)
            aes = ccm.block_cipher(key)
            assert ccm.encrypt(aes, nonce, plain, aad) == expected
            assert ccm.decrypt(aes, nonce, expected, aad) == plain


def test_ccm_refuses_every_altered_bit(interp):
    ccm = interp.module("protocol.ccm")
    key, nonce, aad = bytes(range(16)), bytes(range(13)), b"aad"
    aes = ccm.block_cipher(key)
    sealed = ccm.encrypt(aes, nonce, b"reading 42", aad)
    for bit in range(len(sealed) * 8):
        altered = bytearray(sealed)
        altered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ccm.TagMismatch):
            ccm.decrypt(aes, nonce, bytes(altered), aad)
    with pytest.raises(ccm.TagMismatch):
        ccm.decrypt(aes, nonce, sealed, b"aaD")
    with pytest.raises(ccm.TagMismatch):
        ccm.decrypt(aes, bytes(13), sealed, aad)
    with pytest.raises(ccm.TagMismatch):
        ccm.decrypt(aes, nonce, sealed[:7], aad)
    with pytest.raises(ValueError):
        ccm.block_cipher(bytes(15))
    with pytest.raises(ValueError):
        ccm.encrypt(aes, bytes(12), b"x", b"")
