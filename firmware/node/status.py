# The status record (node/app.py queues one when due: daily, after a reset, or with an error
# to report) and safe mode. Its own module: most wakes send no status and need none of this.

import gc

from firmware.node import rtcstate
from firmware.node.ring import MAX_PAYLOAD
from protocol import cbor, schema

# reset causes of the board -> the schema's names
_CAUSES = {"watchdog": "wdt"}


def queue(node, battery=None):
    from firmware.node.app import FIRMWARE

    st = node.state
    now = node.now()
    msg = {
        "type": "status",
        "uptime_s": max(0, now - st.get("pon", now)),
        "reset_cause": _CAUSES.get(node.cause, node.cause),
        "firmware": FIRMWARE,
        "free_heap_b": gc.mem_free(),
        "boot_count": st.get("boots", 1),
        "buffered": len(node.ring) if node.ring is not None else 0,
        "rssi_dbm": st.get("rssi"),
        "snr_db_x4": st.get("snr"),
        "battery_mv": battery,
        # the first error since the last status got through (crash texts may hold any
        # character); downlinks are answered by id in `ack` records (node/downlink.py)
        "error": schema.printable(st.get("err")),
        "safe_mode": node.safe or None,
    }
    cfg = node.cfg
    if cfg["link"] == "lora" and cfg["lora"]["sf"] >= 10:
        # 51-byte frames at SF10-12 leave about 25 bytes for a record: the version, the heap
        # and the error text go on the faster data rates only (the console shows the error)
        msg["firmware"] = msg["free_heap_b"] = msg["snr_db_x4"] = msg["error"] = None
    known = [spec[1] for spec in schema.UPLINK[schema.UP_STATUS][1]]
    for key in list(msg):
        if msg[key] is None or (key != "type" and key not in known):
            del msg[key]
    if msg["reset_cause"] not in schema.RESET_CAUSES:
        msg["reset_cause"] = "unknown"
    err = msg.get("error")
    if err:
        # a status must fit a flash ring slot, should the link be down: the error text gives
        # way (its record number taken at its widest, 5 bytes)
        msg["seq"] = 0xFFFFFFFF
        over = len(cbor.dumps(schema.encode_uplink(msg)[1])) - MAX_PAYLOAD
        del msg["seq"]
        if over > 0:
            msg["error"] = err[: len(err) - over]
            if not msg["error"]:
                del msg["error"]
    node.queue(msg)
    st["due_status"] = node.now() + cfg["status_s"]
    st["err_sent"] = st.get("err")


def safe_mode(node):
    """Status only, then the REPL: no watchdog, no kind, no deep sleep."""
    print("node: SAFE MODE after %d failed boots; REPL free" % (node.state["tries"] - 1))
    node.safe = True
    node.error("safe mode: %s" % (node.state.get("err") or "boot loop"))
    try:
        node.open_ring()
        queue(node)
        node.flush()
    except Exception as e:  # noqa: BLE001 - safe mode must reach the REPL whatever happens
        print("node: safe-mode status not sent:", e)
    rtcstate.save(node.board, node.state)
