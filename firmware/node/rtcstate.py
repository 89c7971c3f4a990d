# What the node keeps in RTC memory across deep sleep (and soft, hard and watchdog resets, but
# not a power loss), behind a magic and CRCs so garbage after power-on reads as "nothing kept".
#
#   0..2    b"NS2"
#   3..18   the two live sequence counters, u64 BE each (all ones: none), written before every
#           number is used (node/seqstore.py): a fixed header, so that write needs no encoding
#   19..22  crc32 of bytes 3..18
#   23..26  crc32 of the body
#   27..    body: one CBOR map with the rest, written at start-up, after LoRa transmissions
#           and before sleeping
#
# Body keys (short: RTC memory is 2 KB and the kind's state shares it):
#   "tries"  boots since the last one that completed a cycle (boot-loop detection)
#   "boots"  boots since power-on               "pon"    node s at power-on
#   "led"    LoRa duty-cycle ledger (bytes)      "kind"   the kind's save() dict
#   "due_status" node s of the next status       "err"    last error text for the next status
#   "shift"  time-sync steps (node clock)        "tz"     UTC offset, min (after time sync)
#   "rssi", "snr"  of the last frame heard from the gateway
# Header counters, as keys of the same dict: "oseq" (OSCORE sender sequence), "rseq" (records).

import struct
from binascii import crc32

from protocol import cbor

_MAGIC = b"NS2"
_NONE = 0xFFFFFFFFFFFFFFFF
_LIVE = ("oseq", "rseq")
_body = [None]  # type: list  # the body of the last save, reused when only a counter changes


def _header(state):
    a = state.get("oseq")
    b = state.get("rseq")
    head = struct.pack(">QQ", _NONE if a is None else a, _NONE if b is None else b)
    return head + struct.pack(">I", crc32(head))


def load(board):
    """The kept state as a dict; {} after power-on or when it does not verify."""
    raw = board.rtc_read()
    if len(raw) < 27 or raw[:3] != _MAGIC:
        return {}
    head = raw[3:19]
    body = raw[27:]
    if crc32(head) != struct.unpack(">I", raw[19:23])[0]:
        return {}
    if crc32(body) != struct.unpack(">I", raw[23:27])[0]:
        return {}
    try:
        state = cbor.loads(body)
    except ValueError:
        return {}
    if not isinstance(state, dict):
        return {}
    counters = struct.unpack(">QQ", head)
    for i in range(2):
        if counters[i] != _NONE:
            state[_LIVE[i]] = counters[i]
    _body[0] = bytes(body)
    return state


def save(board, state):
    """Write everything (encodes the body)."""
    rest = {}
    for key in state:
        if key not in _LIVE:
            rest[key] = state[key]
    body = cbor.dumps(rest)
    _body[0] = body
    board.rtc_write(_MAGIC + _header(state) + struct.pack(">I", crc32(body)) + body)


def save_counters(board, state):
    """Write the live counters; the body is the one last saved (or loaded)."""
    body = _body[0]
    if body is None:
        save(board, state)
        return
    board.rtc_write(_MAGIC + _header(state) + struct.pack(">I", crc32(body)) + body)
