# What the node keeps in RTC memory across deep sleep (and soft, hard and watchdog resets, but
# not a power loss), behind a magic and CRCs so garbage after power-on reads as "nothing kept".
#
#   0..2    b"NS4"
#   3..4    n: length of the live part (u16 BE)
#   5..     the live part, written without encoding anything (save_live): the two sequence
#           counters (u64 BE each, all ones: none), "tries" and "boots" (u16 BE each), then the
#           LoRa duty-cycle ledger's bytes ("led", protocol.airtime)
#   +n      crc32 of the live part
#   +4      crc32 of the body
#   +8      body: one JSON object with the rest, encoded by save() (start-up after a power-on,
#           and before sleeping); save_live() writes the body last encoded again as it is.
#           JSON, not CBOR: MicroPython's json is C, 10-15 times faster than protocol/cbor.py
#           here, and everything in the body is ints, text, lists and text-keyed dicts
#
# The live part changes several times a cycle: a sequence number is written before it is used
# (node/seqstore.py), the boot counter as the node starts (a crash from there on must count as
# a failed boot), the ledger before the radio keys up. Encoding the whole state each time was
# most of a cycle's encoding work.
#
# Body keys (short: RTC memory is 2 KB and the kind's state shares it):
#   "boots" is live; "pon"    node s at power-on     "kind"   the kind's save() dict
#   "due_status" node s of the next status       "err"    last error text for the next status
#   "shift"  time-sync steps (node clock)        "tz"     UTC offset, min (after time sync)
#   "rssi", "snr"  of the last frame heard from the gateway
# Live keys, in the same dict: "oseq" (OSCORE sender sequence), "rseq" (records), "tries"
# (boots since the last one that completed a cycle: boot-loop detection), "boots" (since
# power-on), "led".

import json
import struct
from binascii import crc32

from micropython import const

_MAGIC = b"NS4"
_NONE = const(0xFFFFFFFFFFFFFFFF)
_LIVE = ("oseq", "rseq", "tries", "boots", "led")
_FIXED = ">QQHH"
_FIXED_SIZE = const(20)
_body = [None]  # type: list  # the body of the last save (or load), for save_live


def _live(state):
    a = state.get("oseq")
    b = state.get("rseq")
    return struct.pack(
        _FIXED,
        _NONE if a is None else a,
        _NONE if b is None else b,
        min(0xFFFF, state.get("tries", 0)),
        min(0xFFFF, state.get("boots", 0)),
    ) + bytes(state.get("led", b""))


def _write(board, state, body):
    live = _live(state)
    board.rtc_write(
        _MAGIC
        + struct.pack(">H", len(live))
        + live
        + struct.pack(">II", crc32(live), crc32(body))
        + body
    )


def load(board):
    """The kept state as a dict; {} after power-on or when it does not verify."""
    raw = board.rtc_read()
    if len(raw) < 5 or raw[:3] != _MAGIC:
        return {}
    n = struct.unpack(">H", raw[3:5])[0]
    if n < _FIXED_SIZE or len(raw) < 13 + n:
        return {}
    live = raw[5 : 5 + n]
    live_crc, body_crc = struct.unpack(">II", raw[5 + n : 13 + n])
    body = raw[13 + n :]
    if crc32(live) != live_crc or crc32(body) != body_crc:
        return {}
    try:
        state = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(state, dict):
        return {}
    oseq, rseq, tries, boots = struct.unpack(_FIXED, live[:_FIXED_SIZE])
    if oseq != _NONE:
        state["oseq"] = oseq
    if rseq != _NONE:
        state["rseq"] = rseq
    state["tries"] = tries
    state["boots"] = boots
    if n > _FIXED_SIZE:
        state["led"] = bytes(live[_FIXED_SIZE:])
    _body[0] = bytes(body)
    return state


def save(board, state):
    """Write everything (encodes the body)."""
    rest = {}
    for key in state:
        if key not in _LIVE:
            rest[key] = state[key]
    body = json.dumps(rest, separators=(",", ":")).encode()
    _body[0] = body
    _write(board, state, body)


def save_live(board, state):
    """Write the live part; the body is the one last saved (or loaded)."""
    body = _body[0]
    if body is None:
        save(board, state)
        return
    _write(board, state, body)


# the name node/seqstore.py (and its tests) use
save_counters = save_live
