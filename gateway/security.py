"""OSCORE on the gateway: per-node security contexts for aiocoap; LoRa frames without transport.

Key material lives in `keys_dir`, one folder per node named by its node id, each an aiocoap
`FilesystemSecurityContext`:

    keys_dir/<node_id>/settings.json   sender/recipient ids (and id context): not secret
    keys_dir/<node_id>/secret.json     master secret and salt: mode 0600, never logged
    keys_dir/<node_id>/sequence.json   written by aiocoap: sender sequence, replay window
    keys_dir/<node_id>/lock            held open while the context is loaded

Facts this module builds on:
- Each loaded context keeps its lock file open: `load_credentials` raises the open-files limit
  (the systemd unit needs `LimitNOFILE=` too) before opening a thousand of them.
- aiocoap's `CredentialsMap.find_oscore` is a linear scan: `IndexedCredentialsMap` answers
  from a dict keyed by (kid, id context).
- `OscoreSiteWrapper` passes *unprotected* requests through to the resources: every resource
  calls `require_node(request)`, which refuses a request without an authenticated claim.
- The replay window is written back only when a context is released: `release()` it on an
  orderly shutdown. After a crash aiocoap falls back to Echo (RFC 9175) recovery on its own.
- A LoRa frame is a CoAP message without a transport: `unprotect_frame` runs `Message.decode`,
  `oscore.verify_start`, `find_oscore`, `unprotect`; `protect_reply` answers through
  `context_for_response().protect`. The LoRa link answers a retransmission (same message id)
  from its own response cache before calling `unprotect_frame`, as CoAP's message layer does
  over UDP; otherwise the retransmission is refused as a replay.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiocoap
from aiocoap import error, oscore
from aiocoap.credentials import CredentialsMap

MASTER_SECRET_LEN = 16
MASTER_SALT_LEN = 8
MAX_ID_LEN = 7  # AES-CCM-16-64-128: nonce length 13 - 6 (RFC 8613 §3.3)
# Descriptors besides the contexts' lock files: sockets, the database, logs, the web page.
FD_HEADROOM = 256


@dataclass(frozen=True)
class NodeKeys:
    """A node's OSCORE input parameters, as the provisioning tool generates them."""

    recipient_id: bytes  # the node's sender id: the kid in its requests
    master_secret: bytes = field(repr=False)
    master_salt: bytes = field(repr=False)
    id_context: bytes | None = None

    def __post_init__(self) -> None:
        if len(self.recipient_id) > MAX_ID_LEN:
            raise ValueError(f"a node's OSCORE id is at most {MAX_ID_LEN} bytes")
        if len(self.master_secret) < MASTER_SECRET_LEN:
            raise ValueError(f"the master secret must be at least {MASTER_SECRET_LEN} bytes")

    @classmethod
    def generate(cls, recipient_id: bytes, id_context: bytes | None = None) -> NodeKeys:
        return cls(
            recipient_id,
            secrets.token_bytes(MASTER_SECRET_LEN),
            secrets.token_bytes(MASTER_SALT_LEN),
            id_context,
        )


def _write_private(path: Path, data: dict[str, Any], mode: int) -> None:
    # Written beside and renamed over, created with its final mode: the secret is never
    # readable by others, not even for a moment, and a crash leaves the old file or the new.
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_node_context(keys_dir: Path, node_id: str, keys: NodeKeys, gateway_id: bytes) -> Path:
    """Create (or re-key) the context folder of one node; returns the folder.

    Re-keying drops the old sequence.json: new key material starts new sequence numbers and
    an empty replay window, and reusing the old ones would be wrong.
    """
    if not node_id or "/" in node_id or node_id.startswith("."):
        raise ValueError(f"node id {node_id!r} cannot name a folder")
    if len(gateway_id) > MAX_ID_LEN:
        raise ValueError(f"the gateway's OSCORE id is at most {MAX_ID_LEN} bytes")
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder = keys_dir / node_id
    folder.mkdir(mode=0o700, exist_ok=True)
    folder.chmod(0o700)
    settings: dict[str, Any] = {
        "sender-id_hex": gateway_id.hex(),
        "recipient-id_hex": keys.recipient_id.hex(),
        "algorithm": "AES-CCM-16-64-128",
        "kdf-hashfun": "sha256",
    }
    if keys.id_context is not None:
        settings["id-context_hex"] = keys.id_context.hex()
    _write_private(folder / "settings.json", settings, 0o600)
    secret = {"secret_hex": keys.master_secret.hex(), "salt_hex": keys.master_salt.hex()}
    _write_private(folder / "secret.json", secret, 0o600)
    (folder / "sequence.json").unlink(missing_ok=True)
    return folder


def raise_open_files_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to at least `needed` (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise OSError(
            f"{needed} open files needed for the OSCORE contexts, the hard limit is {hard}: "
            "raise LimitNOFILE in the systemd unit"
        )
    return int(soft)


class _SeqnoNotingContext:
    """A loaded context as `find_oscore` hands it to `OscoreSiteWrapper`, one per request:
    everything is the context's own, except that `unprotect` also keeps the request's sender
    sequence number (the store derives stable reading ids from it) and, when the link set
    `on_refused`, reports a request it refuses (the CoAP link counts them by reason). The
    wrapper puts this object into the plain request's `remote`, which survives the copies
    aiocoap makes of the message on its way to the resource; `request_seqno` reads it there.

    The attributes read on every request are plain ones here: `__getattr__` (the rest)
    costs a failed lookup first.
    """

    def __init__(self, context: Any) -> None:
        self._context = context
        self.authenticated_claims = context.authenticated_claims
        self.request_seqno: int | None = None
        self.on_refused: Callable[[str, Exception], None] | None = None

    def unprotect(self, message: Any, request_id: Any = None) -> Any:
        try:
            plain, rid = self._context.unprotect(message, request_id)
        except Exception as exc:
            if self.on_refused is not None:
                self.on_refused(str(self.authenticated_claims[0]), exc)
            raise
        if rid is not None and rid.partial_iv is not None:
            self.request_seqno = int.from_bytes(rid.partial_iv, "big")
        return plain, rid

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class IndexedCredentialsMap(CredentialsMap):  # type: ignore[misc]
    """`CredentialsMap` whose `find_oscore` is a dict lookup by (kid, id context).

    aiocoap scans every entry; at a thousand nodes that is a thousand comparisons per
    request. Entries without OSCORE contexts (or added behind the index's back) still work
    through the scan.
    """

    def __init__(self) -> None:
        super().__init__()
        self._index: dict[tuple[bytes, bytes | None], Any] = {}

    def __setitem__(self, label: str, item: Any) -> None:
        old = self.get(label)
        if old is not None:
            self._unindex(old)
        key = self._key_of(item)
        if key is not None and key in self._index:
            raise ValueError(f"kid {key[0].hex()} with this id context is already in use")
        super().__setitem__(label, item)
        if key is not None:
            self._index[key] = item

    def __delitem__(self, label: str) -> None:
        self._unindex(self[label])
        super().__delitem__(label)

    def _unindex(self, item: Any) -> None:
        key = self._key_of(item)
        if key is not None and self._index.get(key) is item:
            del self._index[key]

    @staticmethod
    def _key_of(item: Any) -> tuple[bytes, bytes | None] | None:
        if isinstance(item, oscore.FilesystemSecurityContext):
            return (item.recipient_id, item.id_context)
        return None

    def find_oscore(self, unprotected: Any) -> Any:
        kid = unprotected.get(oscore.COSE_KID)
        item = self._index.get((kid, unprotected.get(oscore.COSE_KID_CONTEXT)))
        if item is not None:
            return _SeqnoNotingContext(item)
        if len(self._index) == len(self):
            raise KeyError(kid)
        return _SeqnoNotingContext(super().find_oscore(unprotected))

    def contexts(self) -> list[Any]:
        return list(self._index.values())


def load_credentials(keys_dir: Path) -> IndexedCredentialsMap:
    """Load every node's context under `keys_dir`; the claim a request gets is the node id."""
    if not keys_dir.is_dir():
        return IndexedCredentialsMap()  # a new site: no node provisioned yet
    folders = sorted(p for p in keys_dir.iterdir() if p.is_dir() and (p / "secret.json").is_file())
    raise_open_files_limit(len(folders) + FD_HEADROOM)
    credentials = IndexedCredentialsMap()
    try:
        for folder in folders:
            if folder.stat().st_mode & 0o077 or (folder / "secret.json").stat().st_mode & 0o077:
                raise PermissionError(f"{folder}: key material readable by others (want 0700/0600)")
            context = oscore.FilesystemSecurityContext(str(folder))
            context.authenticated_claims = [folder.name]
            credentials[":" + folder.name] = context
    except BaseException:
        release(credentials)
        raise
    return credentials


def release(credentials: IndexedCredentialsMap) -> None:
    """Write every context's sequence number and replay window back and drop its lock.

    aiocoap does this only when a context is garbage-collected; an orderly shutdown calls it
    explicitly, after the transports are closed, so a restart needs no Echo round trip.
    """
    for label, item in list(credentials.items()):
        if isinstance(item, oscore.FilesystemSecurityContext):
            if item.lockfile is not None:
                # aiocoap's own release (what its __del__ calls): store, then unlock
                item._destroy()
            del credentials[label]


def node_of(request: aiocoap.Message) -> str | None:
    """The node id an OSCORE request was authenticated as, or None if it was not protected."""
    claims = getattr(request.remote, "authenticated_claims", None) or ()
    return str(claims[0]) if claims else None


def require_node(request: aiocoap.Message) -> str:
    """For every resource: the authenticated node id, or a 4.01 for an unprotected request."""
    node = node_of(request)
    if node is None:
        raise error.Unauthorized("OSCORE required")
    return node


def request_seqno(request: aiocoap.Message) -> int | None:
    """The OSCORE sender sequence number of an unprotected request (None if not OSCORE)."""
    context = getattr(request.remote, "security_context", None)
    seqno = getattr(context, "request_seqno", None)
    return seqno if isinstance(seqno, int) else None


# -- LoRa: OSCORE without a transport ------------------------------------------------------


class FrameRefused(Exception):
    """A LoRa frame that is not accepted. `reason` is one of gateway.links.base's refusal
    reasons; `reply`, when not None, is a frame to send back (the protected 4.01 Echo
    challenge after a restart, without which the node could not recover)."""

    def __init__(self, reason: str, detail: str, reply: bytes | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.reply = reply


@dataclass(frozen=True)
class FrameRequest:
    """A verified request from a LoRa frame."""

    node_id: str
    seqno: int
    request: aiocoap.Message  # the plain CoAP request
    outer: aiocoap.Message = field(repr=False)
    context: Any = field(repr=False)
    request_id: Any = field(repr=False)


def _answer_header(reply: aiocoap.Message, outer: aiocoap.Message, mid: int | None) -> None:
    if outer.mtype == aiocoap.CON:
        reply.mtype = aiocoap.ACK
        reply.mid = outer.mid
    else:
        reply.mtype = aiocoap.NON
        reply.mid = outer.mid if mid is None else mid
    reply.token = outer.token


def unprotect_frame(credentials: IndexedCredentialsMap, frame: bytes) -> FrameRequest:
    try:
        outer = aiocoap.Message.decode(frame)
        unprotected = oscore.verify_start(outer)
    except oscore.NotAProtectedMessage as e:
        raise FrameRefused("unauthenticated", "no OSCORE option") from e
    except (error.Error, ValueError) as e:
        raise FrameRefused("malformed", str(e) or type(e).__name__) from e
    if not outer.code.is_request():
        raise FrameRefused("malformed", "not a request")
    try:
        found = credentials.find_oscore(unprotected)
    except KeyError as e:
        raise FrameRefused("unknown_kid", "no security context for this kid") from e
    context = getattr(found, "_context", found)
    try:
        plain, request_id = context.unprotect(outer)
    except oscore.ReplayErrorWithEcho as e:
        # The replay window was lost (crash): challenge with Echo; the node repeats once.
        reply = e.to_message()
        _answer_header(reply, outer, None)
        raise FrameRefused("replay", "replay window unknown: Echo challenge", reply.encode()) from e
    except oscore.ReplayError as e:
        raise FrameRefused("replay", "sequence number seen before") from e
    except oscore.DecodeError as e:
        raise FrameRefused("malformed", "OSCORE option or COSE object undecodable") from e
    except oscore.ProtectionInvalid as e:
        raise FrameRefused("bad_tag", "decryption failed") from e
    except (error.Error, ValueError) as e:
        raise FrameRefused("malformed", str(e) or type(e).__name__) from e
    return FrameRequest(
        node_id=str(context.authenticated_claims[0]),
        seqno=int.from_bytes(request_id.partial_iv, "big"),
        request=plain,
        outer=outer,
        context=context,
        request_id=request_id,
    )


def protect_reply(
    request: FrameRequest, response: aiocoap.Message, mid: int | None = None
) -> bytes:
    """The protected answer frame: an ACK to a confirmable request, else a NON (`mid` for it)."""
    protected, _ = request.context.context_for_response().protect(response, request.request_id)
    _answer_header(protected, request.outer, mid)
    return bytes(protected.encode())
