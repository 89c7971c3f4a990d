"""RFC 8613 Appendix C, C.1-C.8, in both directions, under CPython and MicroPython: exact bytes."""

import pytest

h = bytes.fromhex

SECRET = h("0102030405060708090a0b0c0d0e0f10")
SALT = h("9e7ca92223786340")
ID_CONTEXT = h("37cbf3210017a2d3")

# (vector, master salt, id context, client id, server id,
#  client key, server key, common IV, client nonce for PIV 0, server nonce for PIV 0)
DERIVATION = [
    (
        "C.1",
        SALT,
        None,
        b"",
        h("01"),
        "f0910ed7295e6ad4b54fc793154302ff",
        "ffb14e093c94c9cac9471648b4f98710",
        "4622d4dd6d944168eefb54987c",
        "4622d4dd6d944168eefb54987c",
        "4722d4dd6d944169eefb54987c",
    ),
    (
        "C.2",
        b"",
        None,
        h("00"),
        h("01"),
        "321b26943253c7ffb6003b0b64d74041",
        "e57b5635815177cd679ab4bcec9d7dda",
        "be35ae297d2dace910c52e99f9",
        "bf35ae297d2dace910c52e99f9",
        "bf35ae297d2dace810c52e99f9",
    ),
    (
        "C.3",
        SALT,
        ID_CONTEXT,
        b"",
        h("01"),
        "af2a1300a5e95788b356336eeecd2b92",
        "e39a0c7c77b43f03b4b39ab9a268699f",
        "2ca58fb85ff1b81c0b7181b85e",
        "2ca58fb85ff1b81c0b7181b85e",
        "2da58fb85ff1b81d0b7181b85e",
    ),
]


@pytest.mark.parametrize("vector", DERIVATION, ids=[v[0] for v in DERIVATION])
def test_key_derivation_client_and_server(interp, vector):
    oscore = interp.module("protocol.oscore")
    _, salt, id_context, client_id, server_id, ckey, skey, iv, cnonce, snonce = vector

    client = oscore.SecurityContext(SECRET, client_id, server_id, salt, id_context)
    assert client.sender_key.hex() == ckey
    assert client.recipient_key.hex() == skey
    assert client.common_iv.hex() == iv
    assert client.nonce(client_id, b"\x00").hex() == cnonce
    assert client.nonce(server_id, b"\x00").hex() == snonce

    server = oscore.SecurityContext(SECRET, server_id, client_id, salt, id_context)
    assert server.sender_key.hex() == skey
    assert server.recipient_key.hex() == ckey
    assert server.common_iv.hex() == iv
    assert server.nonce(server_id, b"\x00").hex() == snonce
    assert server.nonce(client_id, b"\x00").hex() == cnonce


# (vector, derivation, unprotected request, protected request)
REQUESTS = [
    (
        "C.4",
        "C.1",
        "44015d1f00003974396c6f63616c686f737483747631",
        "44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e",
    ),
    (
        "C.5",
        "C.2",
        "440171c30000b932396c6f63616c686f737483747631",
        "440271c30000b932396c6f63616c686f737463091400ff4ed339a5a379b0b8bc731fffb0",
    ),
    (
        "C.6",
        "C.3",
        "44012f8eef9bbf7a396c6f63616c686f737483747631",
        "44022f8eef9bbf7a396c6f63616c686f73746b19140837cbf3210017a2d3ff72cd7273fd331ac45cffbe55c3",
    ),
]


def _contexts(oscore, derivation):
    _, salt, id_context, client_id, server_id = next(v for v in DERIVATION if v[0] == derivation)[
        :5
    ]
    client = oscore.SecurityContext(SECRET, client_id, server_id, salt, id_context)
    server = oscore.SecurityContext(SECRET, server_id, client_id, salt, id_context)
    return client, server, client_id


@pytest.mark.parametrize("vector", REQUESTS, ids=[v[0] for v in REQUESTS])
def test_request_vectors_both_directions(interp, vector):
    oscore = interp.module("protocol.oscore")
    _, derivation, plain, protected = vector
    client, server, _ = _contexts(oscore, derivation)

    assert client.protect_request(h(plain), 20).hex() == protected
    assert server.unprotect_request(h(protected)) == (h(plain), b"\x14")
    # The replay window took sequence number 20: the same request again is refused.
    with pytest.raises(oscore.ReplayDetected):
        server.unprotect_request(h(protected))


def test_request_sequence_number_defaults_to_the_next(interp):
    oscore = interp.module("protocol.oscore")
    client, server, _ = _contexts(oscore, "C.1")
    first = client.protect_request(h(REQUESTS[0][2]))
    second = client.protect_request(h(REQUESTS[0][2]))
    assert server.unprotect_request(first)[1] == b"\x00"
    assert server.unprotect_request(second)[1] == b"\x01"


C4_RESPONSE = "64455d1f00003974ff48656c6c6f20576f726c6421"
C7_PROTECTED = "64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106"
C8_PROTECTED = "64445d1f00003974920100ff4d4c13669384b67354b2b6175ff4b8658c666a6cf88e"


def test_c7_response_reusing_the_request_nonce(interp):
    oscore = interp.module("protocol.oscore")
    client, server, _ = _contexts(oscore, "C.1")
    assert server.protect_response(h(C4_RESPONSE), b"", b"\x14").hex() == C7_PROTECTED
    assert client.unprotect_response(h(C7_PROTECTED), b"", b"\x14") == h(C4_RESPONSE)


def test_c8_response_with_its_own_partial_iv(interp):
    oscore = interp.module("protocol.oscore")
    client, server, _ = _contexts(oscore, "C.1")
    assert server.protect_response(h(C4_RESPONSE), b"", b"\x14", 0).hex() == C8_PROTECTED
    assert client.unprotect_response(h(C8_PROTECTED), b"", b"\x14") == h(C4_RESPONSE)


def test_responses_are_bound_to_their_request(interp):
    oscore = interp.module("protocol.oscore")
    client, _, _ = _contexts(oscore, "C.1")
    # The C.7 response presented as the answer to request 21, or to another kid, fails.
    with pytest.raises(oscore.DecryptionFailed):
        client.unprotect_response(h(C7_PROTECTED), b"", b"\x15")
    with pytest.raises(oscore.DecryptionFailed):
        client.unprotect_response(h(C8_PROTECTED), b"\x02", b"\x14")
