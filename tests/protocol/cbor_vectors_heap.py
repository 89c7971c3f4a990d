"""Typical messages and the heap measurements, kept apart from the big vector tables so that a
64 KB MicroPython heap holds little besides the codec while it is measured."""

from protocol.cbor import dumps, loads

# Typical uplinks as protocol/schema.py puts them on the air, one fresh reading each of leak,
# occupancy, lighting and bin fill: [schema version, {0: record type, key: scaled int...}].
TYPICAL_MESSAGES = [
    [1, {0: 1, 4: 1234567, 5: 120, 6: 3}],
    [1, {0: 2, 4: 1, 5: 3, 6: 1800}],
    [1, {0: 3, 4: 14, 5: 80, 6: 45}],
    [1, {0: 4, 4: 63, 5: 450, 6: 215}],
]


def heap_cost(msg):
    """MicroPython only: bytes allocated by one dumps and by one loads of msg, and the encoded
    length. The collector is off meanwhile, so nothing is reclaimed: this bounds the peak."""
    import gc

    dumps(msg)  # warm up anything created lazily
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        data = dumps(msg)
        encoded = gc.mem_alloc()
        value = loads(data)
        decoded = gc.mem_alloc()
    finally:
        gc.enable()
    if value != msg:
        raise AssertionError("round trip changed the message")
    return encoded - before, decoded - encoded, len(data)


def round_trips(msg, count):
    """Encode and decode msg `count` times with the collector running; the last encoding."""
    data = b""
    for _ in range(count):
        data = dumps(msg)
        if loads(data) != msg:
            raise AssertionError("round trip changed the message")
    return data
