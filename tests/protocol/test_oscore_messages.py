"""OSCORE message processing: option classes, errors by name, replay window, sequence numbers
that survive deep sleep and power loss, and the node's Echo recovery helper."""

import random

import pytest
from aiocoap import Message as AioMessage

from protocol import coap as local_coap

SECRET = bytes(range(1, 17))
SALT = bytes.fromhex("9e7ca92223786340")
NODE_ID = b"\x07"
GATEWAY_ID = b"\x01"


def pair(oscore, secret=SECRET, id_context=None):
    node = oscore.SecurityContext(secret, NODE_ID, GATEWAY_ID, SALT, id_context)
    gateway = oscore.SecurityContext(secret, GATEWAY_ID, NODE_ID, SALT, id_context)
    return node, gateway


def request(options, payload=b"", code=local_coap.POST, mid=0x1234, token=b"\xaa\xbb"):
    return local_coap.Message(local_coap.CON, code, mid, token, options, payload).encode()


def outer_numbers(data):
    return [n for n, _ in local_coap.decode(data).options]


def test_class_e_inside_class_u_outside(interp):
    oscore = interp.module("protocol.oscore")
    node, gateway = pair(oscore)
    plain = request(
        [
            (local_coap.URI_HOST, b"gw.local"),
            (local_coap.URI_PORT, b"\x16\x33"),
            (local_coap.URI_PATH, b"r"),
            (local_coap.CONTENT_FORMAT, b"\x3c"),
            (local_coap.URI_QUERY, b"k=1"),
            (local_coap.ECHO, b"echo-value"),
            (2000, b"unknown options are class E"),
        ],
        b"\xa1\x01\x02",
    )
    protected = node.protect_request(plain)
    outer = AioMessage.decode(protected)  # an independent CoAP decoder reads it
    assert str(outer.code) == "POST"
    assert outer.mid == 0x1234 and outer.token == b"\xaa\xbb"
    assert outer_numbers(protected) == [local_coap.URI_HOST, local_coap.URI_PORT, 9]
    assert outer.opt.uri_host == "gw.local"
    for secret_part in (b"k=1", b"echo-value", b"class E", b"\xa1\x01\x02"):
        assert secret_part not in protected
    assert gateway.unprotect_request(protected) == (plain, b"\x00")


def test_observe_request_and_notification(interp):
    oscore = interp.module("protocol.oscore")
    node, gateway = pair(oscore)
    plain = request([(local_coap.OBSERVE, b""), (local_coap.URI_PATH, b"cfg")], code=1)
    protected = node.protect_request(plain)
    outer = local_coap.decode(protected)
    # §4.1.3.5: FETCH outside, Observe both outside and inside
    assert outer.code == local_coap.FETCH
    assert outer.option(local_coap.OBSERVE) == b""
    got, piv = gateway.unprotect_request(protected)
    assert got == plain

    notification = local_coap.Message(
        local_coap.NON, local_coap.CONTENT, 9, b"\xaa\xbb", [(local_coap.OBSERVE, b"\x05")], b"v"
    ).encode()
    protected = gateway.protect_response(notification, NODE_ID, piv, 0x010203)
    outer = local_coap.decode(protected)
    assert outer.code == local_coap.CONTENT
    assert outer.option(local_coap.OBSERVE) == b"\x05"
    answer = local_coap.decode(node.unprotect_response(protected, NODE_ID, piv))
    # The client orders notifications by Partial IV (the inner Observe is empty).
    assert answer.option(local_coap.OBSERVE) == b"\x01\x02\x03"
    assert answer.payload == b"v"


def test_protect_refuses_what_it_cannot_protect(interp):
    oscore = interp.module("protocol.oscore")
    node, _ = pair(oscore)
    with pytest.raises(ValueError, match="Proxy-Uri"):
        node.protect_request(request([(local_coap.PROXY_URI, b"coap://x/y")]))
    with pytest.raises(ValueError, match="OSCORE"):
        node.protect_request(request([(local_coap.OSCORE, b"\x09\x00")]))
    with pytest.raises(ValueError, match="not a request"):
        node.protect_request(request([], code=local_coap.CONTENT))
    with pytest.raises(ValueError, match="not a response"):
        node.protect_response(request([]), NODE_ID, b"\x00")
    with pytest.raises(ValueError):
        oscore.SecurityContext(SECRET, b"12345678", b"", SALT)


def _swap_option(data, value):
    message = local_coap.decode(data)
    message.options = [(n, value if n == 9 else v) for n, v in message.options]
    return message.encode()


def test_every_failure_is_a_named_value_error(interp):
    oscore = interp.module("protocol.oscore")
    is_oscore_error = interp.module("tests.support.oscore_node").is_oscore_error
    node, gateway = pair(oscore)
    plain = request([(local_coap.URI_PATH, b"r")], b"x")
    good = node.protect_request(plain)
    msg = local_coap.decode(good)

    def variant(**changes):
        m = local_coap.decode(good)
        for k, v in changes.items():
            setattr(m, k, v)
        return m.encode()

    cases = [
        (oscore.NotProtected, plain),
        (oscore.MalformedMessage, b"\x40"),
        (oscore.MalformedMessage, variant(code=local_coap.GET)),
        (oscore.MalformedMessage, _swap_option(good, b"\x29\x00\x07")),  # reserved bit
        (oscore.MalformedMessage, _swap_option(good, b"\x0e" + bytes(6) + b"\x07")),  # n = 6
        (oscore.MalformedMessage, _swap_option(good, b"\x0a\x00")),  # PIV cut short
        (oscore.MalformedMessage, _swap_option(good, b"\x19\x00\x05ab")),  # kid context short
        (oscore.MalformedMessage, _swap_option(good, b"\x01\x00\x07")),  # bytes after PIV
        (oscore.MalformedMessage, _swap_option(good, b"\x01\x00")),  # request without kid
        (oscore.MalformedMessage, _swap_option(good, b"\x08\x07")),  # request without PIV
        (oscore.MalformedMessage, _swap_option(good, b"\x00")),  # zero flags, not empty
        (oscore.MalformedMessage, variant(options=[*msg.options, (9, b"\x09\x01\x07")])),
        (oscore.MalformedMessage, variant(options=[*msg.options, (11, b"outer")])),
        (oscore.MalformedMessage, variant(options=[*msg.options, (6, b"")])),  # Observe, POST
        (oscore.MalformedMessage, variant(payload=msg.payload[:8])),
        (oscore.UnknownContext, _swap_option(good, b"\x09\x00\x08")),
        (oscore.UnknownContext, _swap_option(good, b"\x19\x00\x02ab\x07")),
        (oscore.DecryptionFailed, variant(payload=msg.payload[:-1] + b"\x00")),
        (oscore.DecryptionFailed, pair(oscore, secret=bytes(16))[0].protect_request(plain)),
    ]
    for error, data in cases:
        with pytest.raises(error) as caught:
            gateway.unprotect_request(data)
        assert isinstance(caught.value, ValueError)
        assert is_oscore_error(type(caught.value).__name__)
        assert str(caught.value), f"{type(caught.value).__name__} says nothing"

    # None of the above got into the replay window: the genuine message still verifies...
    assert gateway.unprotect_request(good)[0] == plain
    # ...once.
    with pytest.raises(oscore.ReplayDetected, match="replay"):
        gateway.unprotect_request(good)


def test_response_failures(interp):
    oscore = interp.module("protocol.oscore")
    node, gateway = pair(oscore)
    resp = local_coap.Message(local_coap.ACK, local_coap.CHANGED, 1, b"t", [], b"ok").encode()
    good = gateway.protect_response(resp, NODE_ID, b"\x05")
    assert node.unprotect_response(good, NODE_ID, b"\x05") == resp
    wrong_kid = _swap_option(gateway.protect_response(resp, NODE_ID, b"\x05", 3), b"\x09\x03\x02")
    with pytest.raises(oscore.UnknownContext):
        node.unprotect_response(wrong_kid, NODE_ID, b"\x05")
    with pytest.raises(oscore.DecryptionFailed):
        node.unprotect_response(good, NODE_ID, b"\x06")
    with pytest.raises(oscore.NotProtected):
        node.unprotect_response(resp, NODE_ID, b"\x05")
    max_age = local_coap.decode(good)
    max_age.options.append((local_coap.MAX_AGE, b""))
    with pytest.raises(oscore.MalformedMessage, match="Max-Age"):
        node.unprotect_response(max_age.encode(), NODE_ID, b"\x05")
    bad_code = local_coap.decode(good)
    bad_code.code = local_coap.BAD_REQUEST
    with pytest.raises(oscore.MalformedMessage):
        node.unprotect_response(bad_code.encode(), NODE_ID, b"\x05")


def test_replay_window_32_entries(interp):
    oscore = interp.module("protocol.oscore")
    node, gateway = pair(oscore)
    plain = request([(local_coap.URI_PATH, b"r")])
    sealed = {n: node.protect_request(plain, n) for n in (0, 1, 5, 40, 41, 8, 9, 10, 39, 72)}

    def accepted(n):
        try:
            gateway.unprotect_request(sealed[n])
        except oscore.ReplayDetected:
            return False
        return True

    assert accepted(5)
    assert accepted(1)  # late but inside the window
    assert not accepted(5)
    assert accepted(40)  # window now 9..40
    assert not accepted(8)  # fell out of the window: refused unseen
    assert accepted(9)
    assert accepted(39)
    assert not accepted(39)
    assert accepted(72)  # a jump of 32: window 41..72
    assert not accepted(40)
    assert accepted(41)


def test_forged_message_does_not_poison_the_window(interp):
    oscore = interp.module("protocol.oscore")
    node, gateway = pair(oscore)
    plain = request([(local_coap.URI_PATH, b"r")])
    forged = pair(oscore, secret=bytes(16))[0].protect_request(plain, 100)
    with pytest.raises(oscore.DecryptionFailed):
        gateway.unprotect_request(forged)
    assert gateway.unprotect_request(node.protect_request(plain, 100))[1] == b"\x64"


def test_sequence_numbers_survive_deep_sleep_and_power_loss(interp):
    seq = interp.module("protocol.oscore_seq")
    store = seq.MemorySequenceStore()
    used = set()
    counter = seq.SenderSequence(store, 10)
    rng = random.Random(1)
    for _ in range(300):
        event = rng.random()
        if event < 0.05:
            store.power_loss()  # RTC memory gone: resume from the flash reservation
            counter = seq.SenderSequence(store, 10)
        elif event < 0.3:
            counter = seq.SenderSequence(store, 10)  # deep sleep: RTC memory kept
        n = counter.next()
        assert n not in used
        assert n < store.reserved  # the reservation on flash covers every number sent
        used.add(n)
    # Deep sleep continues exactly where it stopped: no number is wasted.
    before = counter.value
    assert seq.SenderSequence(store, 10).value == before
    store.power_loss()
    assert seq.SenderSequence(store, 10).value == store.reserved


def test_flash_writes_per_thousand_messages(interp):
    seq = interp.module("protocol.oscore_seq")
    for step, writes in ((1, 1000), (10, 100), (64, 16), (100, 10)):
        store = seq.MemorySequenceStore()
        counter = seq.SenderSequence(store, step)
        for _ in range(1000):
            counter.next()
        assert store.flash_writes == writes == counter.flash_writes


def test_sequence_exhaustion(interp):
    oscore = interp.module("protocol.oscore")
    seq = interp.module("protocol.oscore_seq")
    store = seq.MemorySequenceStore(reserved=seq.MAX_SEQNO, live=seq.MAX_SEQNO)
    node = oscore.SecurityContext(
        SECRET, NODE_ID, GATEWAY_ID, SALT, sequence=seq.SenderSequence(store, 64)
    )
    last = node.protect_request(request([(local_coap.URI_PATH, b"r")]))
    assert local_coap.decode(last).option(9) == b"\x0d\xff\xff\xff\xff\xff\x07"
    with pytest.raises(seq.SequenceExhausted):
        node.protect_request(request([(local_coap.URI_PATH, b"r")]))
    assert issubclass(seq.SequenceExhausted, ValueError)


# -- the node's Echo helper against a gateway built from our own server half ---------------


def _reply(gateway, protected, code, options=(), payload=b"", *, fresh_piv=False):
    got, piv = gateway.unprotect_request(protected)
    req = local_coap.decode(got)
    resp = local_coap.Message(local_coap.ACK, code, req.mid, req.token, options, payload)
    seqno = gateway.new_seqno() if fresh_piv else None
    return gateway.protect_response(resp.encode(), NODE_ID, piv, seqno), req


def test_echo_after_gateway_restart(interp):
    oscore = interp.module("protocol.oscore")
    client = interp.module("protocol.oscore_client")
    node, gateway = pair(oscore)
    plain = request([(local_coap.URI_PATH, b"r")], b"reading", mid=0xFFFF)
    exchange = client.Exchange(node, plain)
    first = exchange.first()
    # The restarted gateway cannot vouch for freshness: protected 4.01 with Echo, own PIV
    echo = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    answer, _ = _reply(
        gateway, first, local_coap.UNAUTHORIZED, [(local_coap.ECHO, echo)], fresh_piv=True
    )
    action, again = exchange.on_response(answer)
    assert action == client.SEND
    outer = local_coap.decode(again)
    assert outer.mid == 0x0000  # a new message id, wrapping
    assert outer.token == b"\xaa\xbb"
    assert echo not in again  # Echo travels encrypted
    answer, req = _reply(gateway, again, local_coap.CHANGED, payload=b"ok")
    assert req.option(local_coap.ECHO) == echo
    assert req.payload == b"reading"
    assert req.option(local_coap.OSCORE) is None
    action, plain_answer = exchange.on_response(answer)
    assert action == client.DONE
    assert local_coap.decode(plain_answer).payload == b"ok"
    assert exchange.echo_retried


def test_echo_is_repeated_only_once(interp):
    oscore = interp.module("protocol.oscore")
    client = interp.module("protocol.oscore_client")
    node, gateway = pair(oscore)
    exchange = client.Exchange(node, request([(local_coap.URI_PATH, b"r")]))
    sent = exchange.first()
    for attempt in range(2):
        answer, _ = _reply(
            gateway, sent, local_coap.UNAUTHORIZED, [(local_coap.ECHO, b"e%d" % attempt)]
        )
        if attempt == 0:
            action, sent = exchange.on_response(answer, 77)
            assert action == client.SEND
            assert local_coap.decode(sent).mid == 77
        else:
            with pytest.raises(client.EchoFailed):
                exchange.on_response(answer)


def test_unprotected_401_only_means_send_afresh(interp):
    oscore = interp.module("protocol.oscore")
    client = interp.module("protocol.oscore_client")
    node, gateway = pair(oscore)
    exchange = client.Exchange(node, request([(local_coap.URI_PATH, b"r")], b"p"))
    first = exchange.first()
    replay_detected = local_coap.Message(
        local_coap.ACK, local_coap.UNAUTHORIZED, 0x1234, b"\xaa\xbb", [], b"Replay detected"
    ).encode()
    action, fresh = exchange.on_response(replay_detected)
    assert action == client.SEND
    # A fresh sequence number, and nothing taken from the unauthenticated answer.
    assert local_coap.decode(fresh).option(9) != local_coap.decode(first).option(9)
    got, _ = gateway.unprotect_request(fresh)
    assert local_coap.decode(got).option(local_coap.ECHO) is None
    with pytest.raises(client.EchoFailed):
        exchange.on_response(replay_detected)
    other = local_coap.Message(local_coap.ACK, local_coap.BAD_REQUEST, 1, b"", [], b"").encode()
    with pytest.raises(oscore.NotProtected):
        client.Exchange(node, request([])).on_response(other)


def test_forged_protected_answer_is_refused(interp):
    oscore = interp.module("protocol.oscore")
    client = interp.module("protocol.oscore_client")
    node, _ = pair(oscore)
    _, stranger = pair(oscore, secret=bytes(16))
    exchange = client.Exchange(node, request([(local_coap.URI_PATH, b"r")]))
    sent = exchange.first()
    forged = stranger.protect_response(
        local_coap.Message(
            local_coap.ACK, local_coap.UNAUTHORIZED, 0x1234, b"", [(local_coap.ECHO, b"x")]
        ).encode(),
        NODE_ID,
        local_coap.decode(sent).option(9)[1:2],
    )
    with pytest.raises(oscore.DecryptionFailed):
        exchange.on_response(forged)


def test_empty_ack_then_separate_response(interp):
    oscore = interp.module("protocol.oscore")
    client = interp.module("protocol.oscore_client")
    node, gateway = pair(oscore)
    exchange = client.Exchange(node, request([(local_coap.URI_PATH, b"r")], b"slow"))
    sent = exchange.first()
    empty_ack = local_coap.Message(local_coap.ACK, local_coap.EMPTY, 0x1234).encode()
    assert exchange.on_response(empty_ack) == (client.WAIT, None)
    _, piv = gateway.unprotect_request(sent)
    separate = local_coap.Message(local_coap.CON, local_coap.CHANGED, 0x777, b"\xaa\xbb")
    answer = gateway.protect_response(separate.encode(), NODE_ID, piv)
    action, plain = exchange.on_response(answer)
    assert action == client.DONE
    assert local_coap.decode(plain).type == local_coap.CON  # the caller ACKs it
    reset = local_coap.Message(local_coap.RST, local_coap.EMPTY, 0x1234).encode()
    with pytest.raises(oscore.NotProtected):
        client.Exchange(node, request([])).on_response(reset)
