# Downlinks from the gateway (the payload of its response, or a frame in the LoRa RX window):
# validated with protocol.schema, applied, and acknowledged. Anything wrong (not CBOR, not the
# schema, a value the kind refuses, a record for another kind) is refused with an error that
# the next status carries, and never raises: a downlink cannot crash a node.
#
# Acknowledgement: the response itself proves the gateway stored the uplink; that the node
# applied a downlink shows in the next status (config applied, `error` empty) and, when the
# gateway numbers its downlinks (an "id" field), in the ids listed back (node.acks).

from protocol import cbor, schema

# downlink record type -> the kind it configures
KIND_CONFIG = {
    "leak_config": "leak",
    "occupancy_config": "occupancy",
    "lighting_profile": "lighting",
    "binfill_config": "binfill",
}
KIND_COMMANDS = ("bin_emptied", "ack_alarm", "recalibrate", "wake")


def _fields(record):
    out = {}
    for key in record:
        if key not in ("type", "id") and record[key] is not None:
            out[key] = record[key]
    return out


def apply(node, payload):
    """Apply every record of a downlink payload; returns the number applied."""
    if not payload:
        return 0
    try:
        records = schema.decode_downlink(cbor.loads(payload))
    except ValueError as e:  # CBORDecodeError, SchemaError
        node.error("downlink refused: " + str(e))
        return 0
    applied = 0
    changed = False
    for record in records:
        try:
            changed = _apply_one(node, record) or changed
            applied += 1
            if record.get("id") is not None:
                node.acks.append(record["id"])
        except ValueError as e:
            node.error("downlink %s refused: %s" % (record.get("type"), e))
    if changed:
        try:
            from firmware.node import config

            config.save(node.board, node.cfg)
        except OSError as e:
            node.error("config not saved: %s" % e)
    return applied


def _apply_one(node, record):
    """Apply one validated record; True when the stored configuration changed."""
    kind_name = node.cfg["kind"]
    rtype = record["type"]
    if rtype == "config":
        changes = _fields(record)
        if "report_s" in changes:
            node.kind.configure({"report_s": changes["report_s"]})
            node.cfg["kind_config"]["report_s"] = changes["report_s"]
            node.wake_cap = changes["report_s"]
        if "status_s" in changes:
            node.cfg["status_s"] = changes["status_s"]
            node.state["due_status"] = node.now() + changes["status_s"]
        return bool(changes)
    target = KIND_CONFIG.get(rtype)
    if target is not None:
        if target != kind_name:
            raise ValueError("for a %s node, this is a %s node" % (target, kind_name))
        changes = _fields(record)
        # the kind validates every key before applying any (ValueError names the bad one)
        node.kind.configure(changes)
        node.cfg["kind_config"].update(changes)
        if "report_s" in changes:
            node.wake_cap = changes["report_s"]
        return bool(changes)
    if rtype == "time":
        node.set_time(record["unix_s"], record.get("utc_offset_min", 0))
        return False
    if rtype == "command":
        name = record["command"]
        if name == "reboot":
            node.reboot = True
        elif name == "identify":
            node.identify_s = record.get("duration_s") or 10
        elif name in KIND_COMMANDS:
            node.take(node.kind.command(record, node.now()))
        else:
            raise ValueError("unknown command " + str(name))
        return False
    raise ValueError("unexpected record type " + str(rtype))
