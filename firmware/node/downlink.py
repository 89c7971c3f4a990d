# Downlinks from the gateway (the payload of its response, or a frame in the LoRa RX window):
# validated with protocol.schema, applied, and acknowledged. Anything wrong (not CBOR, not the
# schema, a value the kind refuses, a record for another kind) is refused with an error that
# the next status carries, and never raises: a downlink cannot crash a node.
#
# Acknowledgement: the response itself proves the gateway stored the uplink. What the node
# did with each downlink it says by id (the gateway numbers every record: its "id" field) in
# an `ack` record (protocol/schema.py): ids applied in `confirm`, ids refused in `refused`
# with the reason. The ack is queued like an alarm: ahead of the backlog in this very flush,
# confirmable over LoRa, kept in the flash ring if the link fails. So the gateway, which
# sends an unanswered downlink again with every response, hears back before it would.

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


class Refusal(ValueError):
    """A record this node will not apply; `reason` is one of schema.REFUSALS."""

    def __init__(self, reason, text):
        super().__init__(text)
        self.reason = reason


def apply(node, payload):
    """Apply every record of a downlink payload, then queue the ack naming their ids;
    returns the number applied."""
    if not payload:
        return 0
    try:
        obj = cbor.loads(payload)
    except ValueError as e:  # CBORDecodeError: no record, so no id to name
        node.error("downlink refused: " + str(e))
        return 0
    applied = 0
    done = []  # type: list  # ids applied
    refused = {}  # type: dict  # reason -> ids
    changed = False
    try:
        records = schema.decode_downlink(obj)
    except ValueError as e:  # SchemaError
        node.error("downlink refused: " + str(e))
        records = _readable(obj, refused)
    for record in records:
        rid = record.get("id")
        if rid is not None and (rid in done or _among(refused, rid)):
            continue  # the same id twice in one downlink: answered once
        try:
            changed = _apply_one(node, record) or changed
        except Exception as e:  # noqa: BLE001 - no downlink may crash the node
            reason = getattr(e, "reason", "invalid" if isinstance(e, ValueError) else "failed")
            node.error("downlink %s refused: %s" % (record.get("type"), e))
            if rid is not None:
                refused.setdefault(reason, []).append(rid)
            continue
        applied += 1
        if rid is not None:
            done.append(rid)
    _ack(node, done, refused)
    if changed:
        try:
            from firmware.node.cfgfile import save

            save(node.board, node.cfg)
        except OSError as e:
            node.error("config not saved: %s" % e)
    return applied


def _readable(obj, refused):
    """The records of a downlink that did not decode whole, each on its own: one this node
    cannot read (from a newer schema, say) is refused alone, by the id it still shows."""
    out = []  # type: list
    if not isinstance(obj, (list, tuple)):
        return out
    for part in obj[1 : schema.MAX_RECORDS + 1]:
        try:
            out += schema.decode_downlink([obj[0], part])
        except ValueError:
            for rid in schema.downlink_ids([0, part]):
                if not _among(refused, rid):
                    refused.setdefault("malformed", []).append(rid)
    return out


def _among(refused, rid):
    return any(rid in ids for ids in refused.values())


def _ack(node, done, refused):
    """Queue the ack records: one per refusal reason, the confirmed ids in the first."""
    for reason in schema.REFUSALS:
        ids = refused.get(reason)
        if ids:
            msg = {"type": "ack", "refused": ids, "reason": reason}
            if done:
                msg["confirm"] = done
                done = None
            node.queue(msg, True)
    if done:
        node.queue({"type": "ack", "confirm": done}, True)


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
            raise Refusal("wrong_kind", "for a %s node, this is a %s node" % (target, kind_name))
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
            try:
                out = node.kind.command(record, node.now())
            except ValueError as e:  # the kinds raise it for a command they do not handle
                raise Refusal("unsupported", str(e))
            node.take(out)
        else:
            raise Refusal("unsupported", "unknown command " + str(name))
        return False
    raise Refusal("unsupported", "unexpected record type " + str(rtype))
