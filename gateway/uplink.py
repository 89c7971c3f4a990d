"""The step every link shares between OSCORE and the pipeline, and what goes back to the node.

    frame --(link: OSCORE unprotect, gateway/security.py)--> node id, sequence number, payload
          --decode_uplink()--> Uplink of Readings --(pipeline: durable commit)--> downlinks
          --encode_downlinks()--> the response payload (protocol.schema downlink array)

- `decode_uplink` turns an authenticated payload into an `Uplink`: CBOR (cbor2) then
  protocol.schema. Anything wrong is `UplinkRefused("malformed")` whose detail starts with
  "cbor:" or "schema:" so the node's operator (and the 4.00 response) can tell which.
- Reading ids are stable across resends: `<node>:<seq>` when the record carries the node's own
  record counter `seq` (the firmware always sets it, so a reading re-sent under a new OSCORE
  sequence number after an Echo round trip keeps its id), else `<node>:<piv>:<index>`
  (gateway.links.base.make_reading_id), as protocol/schema.py specifies.
- `Deliveries` confirms downlinks: the schema has no field for a node to list applied downlink
  ids yet, so a downlink counts as confirmed when the node's *next* accepted uplink arrives
  after a response that carried it (a node sends its next uplink only after the exchange that
  carried the response). What it cannot prove: a response lost after the gateway sent it, to
  a node that then gave up (a NON over LoRa); such a downlink is confirmed without having been
  applied.
- `Keyring` shares one set of loaded OSCORE contexts between the links of one process: a
  context folder may be loaded once only (its lock file), and two objects for the same key
  would reuse sender sequence numbers, i.e. nonces. The last link to close writes the
  sequence numbers and replay windows back (gateway.security.release). Nodes provisioned while
  the gateway runs are loaded when the registry changes or an unknown kid arrives.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from aiocoap import oscore

from gateway.downlinks import Downlink
from gateway.links.base import Uplink, UplinkRefused, make_reading_id
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
    """An authenticated payload -> Uplink; UplinkRefused("malformed", "cbor: ..."/"schema: ...")."""
    try:
        decoded = cbor2.loads(payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise UplinkRefused("malformed", f"cbor: {exc}") from None
    try:
        records = schema.decode_uplink(decoded)
    except ValueError as exc:  # SchemaError; and anything odd cbor2 may produce (tags)
        raise UplinkRefused("malformed", f"schema: {exc}") from None
    except TypeError as exc:  # unhashable map keys and the like from a hostile encoder
        raise UplinkRefused("malformed", f"schema: {exc}") from None
    readings = []
    battery_mv: int | None = None
    firmware: str | None = None
    for index, record in enumerate(records):
        kind = str(record["type"])
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
    if len({r.reading_id for r in readings}) != len(readings):
        raise UplinkRefused("malformed", "schema: two records with the same seq")
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
    )


def encode_downlinks(
    downlinks: Sequence[Downlink], max_bytes: int | None = None
) -> tuple[bytes, list[int]]:
    """The downlinks that fit in `max_bytes`, oldest first, as one protocol.schema array.

    Returns (payload, ids included). A stored command the schema refuses is left out (and
    logged): it can never be delivered, and it must not hold back the ones behind it.
    """
    records: list[Any] = []
    ids: list[int] = []
    size = _ARRAY_OVERHEAD
    for downlink in downlinks:
        try:
            (record,) = schema.encode_downlink(dict(downlink.command))[1:]
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
    """Which downlinks went out in the last response to each node, to confirm on its next
    uplink (module docstring). In memory: after a restart nothing is confirmed implicitly, so
    those downlinks go out once more, never the other way round."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, ...]] = {}

    def confirmed_by(self, node_id: str) -> tuple[int, ...]:
        """Ids the node's new uplink confirms (those of the response before it); they stay
        here until `delivered` records what this uplink's own response carried, so an uplink
        the store could not commit confirms nothing."""
        return self._last.get(node_id, ())

    def delivered(self, node_id: str, ids: Iterable[int]) -> None:
        ids = tuple(ids)
        if ids:
            self._last[node_id] = ids
        else:
            self._last.pop(node_id, None)


def with_confirmations(uplink: Uplink, ids: Sequence[int]) -> Uplink:
    if not ids:
        return uplink
    return Uplink(
        node_id=uplink.node_id,
        link=uplink.link,
        received_at=uplink.received_at,
        readings=uplink.readings,
        confirmed_downlinks=tuple(uplink.confirmed_downlinks) + tuple(ids),
        rssi_dbm=uplink.rssi_dbm,
        snr_db=uplink.snr_db,
        battery_mv=uplink.battery_mv,
        firmware=uplink.firmware,
        max_downlinks=uplink.max_downlinks,
    )


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
