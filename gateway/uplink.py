"""The step every link shares between OSCORE and the pipeline, and what goes back to the node.

    frame --(link: OSCORE unprotect, gateway/security.py)--> node id, sequence number, payload
          --decode_uplink()--> Uplink of Readings --(pipeline: durable commit)--> downlinks
          --encode_downlinks()--> the response payload (protocol.schema downlink array)

- `decode_uplink` turns an authenticated payload into an `Uplink`: CBOR (cbor2) then
  protocol.schema. Not CBOR is `UplinkRefused("malformed", "cbor: ...")`, CBOR that is not a
  message of the schema `UplinkRefused("schema", "schema: ...")`: counted apart, and the 4.00
  response's diagnostic tells the node's operator which.
- Reading ids are stable across resends: `<node>:<seq>` when the record carries the node's own
  record counter `seq` (the firmware always sets it, so a reading re-sent under a new OSCORE
  sequence number after an Echo round trip keeps its id), else `<node>:<piv>:<index>`
  (gateway.links.base.make_reading_id), as protocol/schema.py specifies.
- Downlink delivery is explicit: `encode_downlinks` puts each downlink's `wire_id` in the
  record's `id`; the node answers with `ack` records (ids applied, ids refused and why), which
  `decode_uplink` turns into `Uplink.confirmed_downlinks` (a `Receipts`) instead of readings.
  The pipeline settles exactly those ids (gateway/downlinks.py). Nothing is inferred from the
  mere arrival of a later uplink: a response lost on the way is not a delivery.
  `Deliveries` and `with_confirmations` remain, inert, for links written against the old
  inference (they confirm nothing).
- `Keyring` shares one set of loaded OSCORE contexts between the links of one process: a
  context folder may be loaded once only (its lock file), and two objects for the same key
  would reuse sender sequence numbers, i.e. nonces. The last link to close writes the
  sequence numbers and replay windows back (gateway.security.release). Nodes provisioned while
  the gateway runs are loaded when the registry changes or an unknown kid arrives.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from aiocoap import oscore

from gateway.downlinks import Downlink
from gateway.links.base import Receipts, Uplink, UplinkRefused, make_reading_id
from gateway.records import Reading
from gateway.security import (
    FD_HEADROOM,
    IndexedCredentialsMap,
    load_credentials,
    raise_open_files_limit,
    release,
)
from protocol import schema

log = logging.getLogger(__name__)

# CBOR array head + version; each record follows
_ARRAY_OVERHEAD = 2
RESCAN_S = 2.0  # the keys folder is scanned for new nodes at most this often


def reading_id(node_id: str, request_seqno: int, index: int, record: Mapping[str, Any]) -> str:
    seq = record.get("seq")
    if isinstance(seq, int):
        return f"{node_id}:{seq}"
    return make_reading_id(node_id, request_seqno, index)


def decode_uplink(
    node_id: str,
    request_seqno: int,
    payload: bytes,
    received_at: float,
    *,
    link: str,
    rssi_dbm: float | None = None,
    snr_db: float | None = None,
    max_downlinks: int = 8,
) -> Uplink:
    """An authenticated payload -> Uplink; UplinkRefused("malformed", "cbor: ...") or
    UplinkRefused("schema", "schema: ...")."""
    try:
        decoded = cbor2.loads(payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise UplinkRefused("malformed", f"cbor: {exc}") from None
    try:
        records = schema.decode_uplink(decoded)
    except ValueError as exc:  # SchemaError; and anything odd cbor2 may produce (tags)
        raise UplinkRefused("schema", f"schema: {exc}") from None
    except TypeError as exc:  # unhashable map keys and the like from a hostile encoder
        raise UplinkRefused("schema", f"schema: {exc}") from None
    readings = []
    battery_mv: int | None = None
    firmware: str | None = None
    confirmed: dict[int, None] = {}  # in the node's order, once each
    refused: dict[int, str] = {}
    for index, record in enumerate(records):
        kind = str(record["type"])
        if kind == "ack":
            # the node's answer about its downlinks: settles the queue, is not a reading
            for wire_id in record.get("confirm", ()):
                confirmed[wire_id] = None
            for wire_id in record.get("refused", ()):
                refused[wire_id] = str(record["reason"])
            continue
        readings.append(
            Reading(
                reading_id=reading_id(node_id, request_seqno, index, record),
                node_id=node_id,
                kind=kind,
                received_at=received_at,
                age_s=int(record["age_s"]),
                data=record,
                alarm=kind == "alarm",
            )
        )
        if kind == "status":
            battery_mv = record.get("battery_mv", battery_mv)
            firmware = record.get("firmware", firmware)
    if len(readings) > 1 and len({r.reading_id for r in readings}) != len(readings):
        raise UplinkRefused("malformed", "schema: two records with the same seq")
    receipts = (
        Receipts([i for i in confirmed if i not in refused], refused)
        if confirmed or refused
        else _NO_RECEIPTS
    )
    return Uplink(
        node_id=node_id,
        link=link,
        received_at=received_at,
        readings=readings,
        rssi_dbm=rssi_dbm,
        snr_db=snr_db,
        battery_mv=battery_mv,
        firmware=firmware,
        max_downlinks=max_downlinks,
        confirmed_downlinks=receipts,
    )


_NO_RECEIPTS = Receipts()  # the usual uplink's: shared (nothing changes a Receipts)


def encode_downlinks(
    downlinks: Sequence[Downlink], max_bytes: int | None = None
) -> tuple[bytes, list[int]]:
    """The downlinks that fit in `max_bytes`, oldest first, as one protocol.schema array, each
    record carrying the downlink's `wire_id` as its `id` (the node acks by it).

    Returns (payload, gateway row ids included). A stored command the schema refuses is left
    out (and logged): it can never be delivered, and it must not hold back the ones behind it.
    """
    records: list[Any] = []
    ids: list[int] = []
    size = _ARRAY_OVERHEAD
    for downlink in downlinks:
        command = dict(downlink.command)
        command.pop("id", None)  # the number is the gateway's to give
        if downlink.wire_id:
            command["id"] = downlink.wire_id
        try:
            (record,) = schema.encode_downlink(command)[1:]
        except ValueError as exc:
            log.error("downlink %d for %s is not valid: %s", downlink.id, downlink.node_id, exc)
            continue
        length = len(cbor2.dumps(record, canonical=True))
        if max_bytes is not None and size + length > max_bytes:
            break
        records.append(record)
        ids.append(downlink.id)
        size += length
    if not records:
        return b"", []
    return cbor2.dumps([schema.SCHEMA_VERSION, *records], canonical=True), ids


class Deliveries:
    """Formerly: the downlinks of the last response to each node, confirmed by its next
    uplink. That inference confirmed downlinks whose response was lost; nodes now ack by id
    (module docstring). Inert, so links that still call it change nothing: `confirmed_by`
    is always empty. Links may drop it."""

    def confirmed_by(self, node_id: str) -> tuple[int, ...]:
        return ()

    def delivered(self, node_id: str, ids: Iterable[int]) -> None:
        pass


def with_confirmations(uplink: Uplink, ids: Sequence[int]) -> Uplink:
    """`uplink` also confirming the node's wire ids `ids` (its own refusals kept)."""
    if not ids:
        return uplink
    refused = uplink.refused_downlinks
    merged = [i for i in (*uplink.confirmed_downlinks, *ids) if i not in refused]
    return dataclasses.replace(uplink, confirmed_downlinks=Receipts(dict.fromkeys(merged), refused))


@dataclass
class Keyring:
    """The OSCORE contexts of one keys folder, shared by the links of this process."""

    keys_dir: Path
    credentials: IndexedCredentialsMap
    users: int = 0
    scanned_at: float = field(default_factory=time.monotonic)

    def load_new(self, force: bool = False) -> list[str]:
        """Load the context folders provisioned since start; returns the node ids loaded.

        Unless forced (the registry changed), at most every RESCAN_S: a flood of unknown kids
        must not turn into a flood of folder scans. A folder already loaded is left alone:
        re-keying a node takes a restart, so no context is swapped under a request in flight.
        """
        now = time.monotonic()
        if not force and now - self.scanned_at < RESCAN_S:
            return []
        self.scanned_at = now
        loaded = []
        for folder in sorted(self.keys_dir.iterdir()):
            label = ":" + folder.name
            if label in self.credentials or not (folder / "secret.json").is_file():
                continue
            try:
                if folder.stat().st_mode & 0o077 or (folder / "secret.json").stat().st_mode & 0o077:
                    raise PermissionError("key material readable by others (want 0700/0600)")
                raise_open_files_limit(len(self.credentials) + 1 + FD_HEADROOM)
                context = oscore.FilesystemSecurityContext(str(folder))
                context.authenticated_claims = [folder.name]
                self.credentials[label] = context
            except (OSError, ValueError, oscore.FilesystemSecurityContext.LoadError) as exc:
                log.error("OSCORE context %s not loaded: %s", folder.name, exc)
                continue
            loaded.append(folder.name)
        if loaded:
            log.info("OSCORE contexts loaded for new nodes: %s", ", ".join(loaded))
        return loaded

    def close(self) -> None:
        self.users -= 1
        if self.users <= 0:
            _keyrings.pop(self.keys_dir, None)
            release(self.credentials)
            log.info("OSCORE contexts written back and released (%s)", self.keys_dir)


_keyrings: dict[Path, Keyring] = {}


def open_keyring(keys_dir: Path) -> Keyring:
    """The loaded contexts of `keys_dir` (loaded on first use); `close()` once per call."""
    keys_dir = keys_dir.resolve()
    keyring = _keyrings.get(keys_dir)
    if keyring is None:
        keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        keyring = _keyrings[keys_dir] = Keyring(keys_dir, load_credentials(keys_dir))
        log.info("OSCORE contexts loaded: %d nodes", len(keyring.credentials.contexts()))
    keyring.users += 1
    return keyring
