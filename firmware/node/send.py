# Sending: what a cycle queued (Node.fresh) and what the flash ring holds, over the link the
# config names, in uplinks of as many records as one message carries (a UDP datagram, or one
# LoRa frame at the configured spreading factor). Order: alarms first (stored, then fresh),
# then routine records (stored, oldest first, then fresh). A record leaves the ring only when
# the gateway acknowledged the uplink that carried it; what could not go is appended to the
# ring at the end.

import sys

from micropython import const

from firmware.node import rtcstate
from firmware.node.link import LinkDown, Refused
from protocol import cbor
from protocol import schema as _schema

_MAX_MESSAGES = const(16)  # uplinks per cycle: a long backlog drains over a few cycles
# the schema's numbers only: the module itself is dropped for the exchange (node/app.py park)
_VERSION = _schema.SCHEMA_VERSION
_MAX_RECORDS = _schema.MAX_RECORDS
_K_AGE = _schema.K_AGE
_K_SEQ = _schema.K_SEQ
del _schema


def context(node):
    """The OSCORE security context, its sender sequence kept in RTC memory and flash."""
    from firmware.node.seqstore import SeqStore
    from protocol.oscore import SecurityContext
    from protocol.oscore_seq import SenderSequence

    keys = node.keys  # decoded at start-up (node/app.py), or the error text
    if isinstance(keys, str):
        raise ValueError(keys)
    sequence = SenderSequence(SeqStore(node.board, node.state, "oseq", "oseq.bin"), 64)
    return SecurityContext(
        keys["secret"],
        keys["sender_id"],
        keys["recipient_id"],
        keys["salt"],
        keys["id_context"],
        sequence=sequence,
    )


def open_link(node):
    """The configured link, or None without key material (the error goes to the status)."""
    cfg = node.cfg
    try:
        ctx = context(node)
    except ValueError as e:
        node.error(str(e))
        return None
    if cfg["link"] == "lora":
        from firmware.node.loralink import LoRaLink
        from protocol.airtime import DutyCycleLedger

        try:
            ledger = DutyCycleLedger.from_bytes(node.state.get("led", b""))
        except ValueError:
            ledger = DutyCycleLedger()

        def keep_ledger():
            # in RTC memory after every transmission: a reset must not forget airtime spent
            node.state["led"] = ledger.to_bytes()
            rtcstate.save_live(node.board, node.state)

        lora = LoRaLink(
            node.board,
            cfg["lora"],
            ctx,
            ledger,
            clock=node.now,
            on_record=keep_ledger,
            light_sleep=cfg["kind"] != "lighting",
        )
        lora.feed = node.feed
        return lora
    from firmware.node.coaplink import CoAPLink

    wifi = cfg["wifi"]
    if not node.board.wlan_connect(wifi["ssid"], wifi["password"], 10000):
        raise LinkDown("wifi: no connection to " + wifi["ssid"])
    link = CoAPLink(node.board, cfg["coap"], ctx)
    link.feed = node.feed
    return link


def _record(node, slot, i):
    """[map, alarm, ring slot or -1, fresh index or -1] for one record to send."""
    if slot < 0:
        return [node.fresh[i][0], node.fresh[i][1], -1, i]
    _seq, taken, alarm, payload = node.ring.read(slot)
    try:
        wire = cbor.loads(payload)
    except ValueError:
        return None
    now = node.now()
    if now > taken:
        wire[_K_AGE] = now - taken
    return [wire, alarm, slot, -1]


def _drop(node, item, n):
    node.error("record of %d bytes too big for the link: dropped" % n)
    if item[2] >= 0:
        node.ring.mark_sent([item[2]])
    else:
        node.fresh[item[3]] = (None, False)


def batch(node, limit):
    """Up to `limit` bytes of records, in sending order (see the top of this file)."""
    ring = node.ring
    # the order as (ring slot, fresh index) pairs; records are read from flash only as far
    # as the message has room (an SF12 frame holds one record of a long backlog)
    order = []  # type: list
    slots = ring.pending(_MAX_RECORDS)
    for slot in slots:
        if ring.is_alarm(slot):
            order.append((slot, -1))
    for i in range(len(node.fresh)):
        if node.fresh[i][1] and node.fresh[i][0] is not None:
            order.append((-1, i))
    for slot in slots:
        if not ring.is_alarm(slot):
            order.append((slot, -1))
    for i in range(len(node.fresh)):
        if not node.fresh[i][1] and node.fresh[i][0] is not None:
            order.append((-1, i))
    out = []  # type: list
    size = 3  # array head and the version
    for slot, i in order:
        item = _record(node, slot, i)
        if item is None:
            continue
        n = len(cbor.dumps(item[0]))
        if n + 3 > limit:
            _drop(node, item, n)  # it would block the queue for ever
            continue
        if size + n > limit or len(out) >= _MAX_RECORDS:
            break  # the rest waits: records go in order, oldest first
        out.append(item)
        size += n
    return out


def flush(node):
    """Send what is queued and what the ring holds; keep in the ring what did not go."""
    ring = node.ring
    if not node.fresh and not len(ring):
        return  # nothing to say: no radio, no WiFi (a meter's pulse wake, a quiet sample)
    loaded = None
    try:
        for _ in range(_MAX_MESSAGES):
            if not node.fresh and not len(ring):
                break  # all sent (a link closed for a downlink stays closed if no ack is due)
            if node.link is None:
                if node.lean:
                    loaded = list(sys.modules)
                node.link = open_link(node)
                if node.link is None:
                    break
            link = node.link
            items = batch(node, link.max_payload())
            if not items:
                break
            payload = cbor.dumps([_VERSION] + [b[0] for b in items])
            confirmed = any(b[1] for b in items)
            response = link.exchange(payload, confirmed)
            del payload
            node.feed()
            node.sent += len(items)
            ring.mark_sent([b[2] for b in items if b[2] >= 0])
            done = [b[3] for b in items if b[3] >= 0]
            node.fresh = [node.fresh[i] for i in range(len(node.fresh)) if i not in done]
            del items
            if response is not None:
                _answered(node, link)
                if response:
                    if loaded is not None:
                        # a battery node applies it with the link closed and its modules
                        # dropped (the schema and the kind come back for it); an ack to
                        # send opens the link again
                        node.link = None
                        link.close()
                        del link
                        _forget_since(loaded)
                        loaded = None
                    from firmware.node import downlink

                    downlink.apply(node, response)
    except (LinkDown, Refused, ValueError, OSError) as e:
        # ValueError: an OSCORE failure (bad tag, Echo refused again) is this exchange lost
        node.error("link: %s" % e)
    now = node.now()  # one time for the cycle's records: they were taken together
    for wire, alarm in node.fresh:
        if wire is None:
            continue
        try:
            ring.append(cbor.dumps(wire), wire[_K_SEQ], now, alarm)
        except ValueError as e:
            node.error("record dropped: %s" % e)
    node.fresh = []


def _forget_since(loaded):
    from firmware.node.app import forget

    forget(*[name for name in sys.modules if name not in loaded])


def _answered(node, link):
    st = node.state
    if st.get("err_sent") is not None and st.get("err") == st["err_sent"]:
        st.pop("err", None)  # the status that carried it got through
    st.pop("err_sent", None)
    node.acks = []
    if link.rssi_dbm is not None:
        st["rssi"] = int(link.rssi_dbm)
    if link.snr_db is not None:
        st["snr"] = int(link.snr_db * 4)
