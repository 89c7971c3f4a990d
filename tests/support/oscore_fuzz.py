# Mutation fuzzing of OSCORE reception, run inside one interpreter (MicroPython or CPython) so
# that thousands of cases cost one bridge round trip. Written in the MicroPython subset.
#
# Valid protected requests and responses are mutated after their CoAP header and token (type,
# message id and token are outside OSCORE's protection by design, RFC 8613 §4.2, so changing
# them is not an attack OSCORE can notice), one to three edits each, and handed to
# unprotect_request / unprotect_response. Every one must be refused with an OSCOREError; an
# acceptance or any other exception is a finding - with one exception, counted apart: an edit
# confined to an unprotected Class U field (the outer Observe value, which the client must
# ignore, RFC 8613 §4.1.3.5.2) yields exactly the original message, which is no forgery.
from protocol import coap, oscore


class XorShift:
    """The same pseudo-random stream on both interpreters (their `random` modules differ)."""

    def __init__(self, seed):
        self.state = (seed * 2654435761 + 1) & 0xFFFFFFFF or 1

    def next(self):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x

    def below(self, n):
        return self.next() % n

    def byte(self):
        return self.next() & 0xFF


SECRET = b"0123456789abcdef"
SALT = b"\x9e\x7c\xa9\x22\x23\x78\x63\x40"


def _receiver(kind):
    if kind == "request":
        return oscore.SecurityContext(SECRET, b"\x01", b"\x07", SALT)
    return oscore.SecurityContext(SECRET, b"\x07", b"\x01", SALT)


def _open(ctx, kind, data, kid, piv):
    if kind == "request":
        return ctx.unprotect_request(data)
    return ctx.unprotect_response(data, kid, piv)


def corpus():
    """(kind, protected bytes, request kid, request piv, the original's plain result)."""
    node = oscore.SecurityContext(SECRET, b"\x07", b"\x01", SALT)
    out = []
    paths = (b"r", b"status", b"leak")
    for i in range(12):
        options = [(coap.URI_PATH, paths[i % 3])]
        if i % 2:
            options.append((coap.CONTENT_FORMAT, b"\x3c"))
        if i % 4 == 3:
            options.append((coap.OBSERVE, b""))
        payload = bytes(range(i * 3))
        plain = coap.Message(coap.CON, coap.POST, 0x100 + i, b"\x01\x02", options, payload)
        out.append(["request", node.protect_request(plain.encode(), i * 37), None, None])
    gateway = oscore.SecurityContext(SECRET, b"\x01", b"\x07", SALT)
    for i in range(8):
        piv = oscore.piv_bytes(i * 1000)
        options = [(coap.CONTENT_FORMAT, b"\x3c")] if i % 2 else []
        if i % 4 == 3:
            options.append((coap.OBSERVE, b"\x02"))
        plain = coap.Message(coap.ACK, coap.CHANGED, 0x200 + i, b"\x01", options, b"ok" * i)
        seqno = i if i % 2 else None
        sealed = gateway.protect_response(plain.encode(), b"\x07", piv, seqno)
        out.append(["response", sealed, b"\x07", piv])
    for entry in out:
        entry.append(_open(_receiver(entry[0]), entry[0], entry[1], entry[2], entry[3]))
    return out


def mutate(rng, data):
    start = 4 + (data[0] & 0x0F)
    buf = bytearray(data)
    for _ in range(1 + rng.below(3)):
        op = rng.below(7)
        n = len(buf)
        if n <= start:
            op = 3  # only appending is left
        if op == 0:
            i = start + rng.below(n - start)
            buf[i] ^= 1 << rng.below(8)
        elif op == 1:
            buf[start + rng.below(n - start)] = rng.byte()
        elif op == 2:
            # slice assignment: MicroPython's bytearray has no item deletion
            i = start + rng.below(n - start)
            buf[i : i + 1] = b""
        elif op == 3:
            i = start + rng.below(n - start + 1)
            buf[i:i] = bytes((rng.byte(),))
        elif op == 4:
            buf[start + rng.below(n - start) :] = b""
        elif op == 5:
            buf.extend(bytes(rng.byte() for _ in range(1 + rng.below(8))))
        else:
            # copy a run of bytes over another place: shifts option/payload structure
            i = start + rng.below(n - start)
            j = start + rng.below(n - start)
            k = 1 + rng.below(6)
            buf[j : j + k] = buf[i : i + k]
    return bytes(buf)


def run(count, seed=1):
    """Mutate `count` messages. Returns {'refused', 'accepted', 'unprotected_field',
    'crashed', 'unchanged': counts, 'errors': {class name: count}, 'examples': findings}."""
    rng = XorShift(seed)
    messages = corpus()
    receivers = {}
    errors = {}
    refused = accepted = crashed = same = unchanged = 0
    examples = []
    for _ in range(count):
        kind, original, kid, piv, expected = messages[rng.below(len(messages))]
        mutated = mutate(rng, original)
        if mutated == original:
            unchanged += 1  # the edits cancelled out: not a mutation
            continue
        # One receiver per kind, replaced after an acceptance so its replay window is fresh.
        ctx = receivers.get(kind)
        if ctx is None:
            ctx = receivers[kind] = _receiver(kind)
        try:
            result = _open(ctx, kind, mutated, kid, piv)
        except oscore.OSCOREError as e:
            refused += 1
            name = type(e).__name__
            errors[name] = errors.get(name, 0) + 1
            continue
        except Exception as e:  # noqa: BLE001 - any other exception is exactly what we look for
            crashed += 1
            if len(examples) < 5:
                examples.append(f"{kind} {mutated.hex()}: {type(e).__name__} {e!r}")
            continue
        receivers.pop(kind)
        if result == expected:
            same += 1
            continue
        accepted += 1
        if len(examples) < 5:
            examples.append(f"{kind} accepted: {mutated.hex()}")
    return {
        "refused": refused,
        "accepted": accepted,
        "unprotected_field": same,
        "crashed": crashed,
        "unchanged": unchanged,
        "errors": errors,
        "examples": examples,
    }
