"""The CoAP/UDP link: aiocoap serving `POST /u` behind OSCORE (RFC 8613) for WiFi nodes.

    datagram -> [size check] -> aiocoap message layer (dedup, CON/ACK, separate responses)
             -> GuardedSite: refuse unprotected, find context, unprotect (OscoreSiteWrapper's
                steps) -> UplinkSite: POST /u without Site's lookup
             -> UplinkResource: decode (gateway/uplink.py) -> pipeline.handle (durable COMMIT)
             -> 2.04 carrying the node's pending downlinks, protected

- The 2.04 goes out only after `pipeline.handle` returned, i.e. after the group commit that
  holds the readings; if the commit takes longer than aiocoap's empty-ACK delay, aiocoap sends
  an empty ACK first and the 2.04 as a separate confirmable response (the node handles both).
- Every refusal is counted by reason (`Metrics.refusals`, labels link="coap" and reason):
  `unauthenticated` (no OSCORE: aiocoap's wrapper would pass such a request through to the
  resources, `GuardedSite` refuses it first), `unknown_kid`, `bad_tag` (wrong key, forged or
  corrupted), `replay`, `malformed` (not CoAP, undecodable COSE, bad CBOR, schema errors: the
  4.00's text says which), `oversized` (a datagram over RFC 7252's 1152 bytes, or a payload
  over 1024), `unknown_node` and `unavailable` (counted by the pipeline).
- A protected 4.01 with Echo after a crash (RFC 9175 recovery: the replay window was not
  written back) is not a refusal: the node repeats at once and is served.
- Always-listening nodes (lamps) get downlinks pushed at once as `POST /d` to the address
  their uplinks come from (gateway/links/wake.py); aiocoap's OSCORE client answers a
  rebooted lamp's Echo challenge by itself.
- `close()` stops the socket first, then the last user of the OSCORE contexts writes their
  sequence numbers and replay windows back (gateway/uplink.py `Keyring`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiocoap
import aiocoap.pipe
from aiocoap import error, oscore, resource
from aiocoap.numbers.constants import TransportTuning
from aiocoap.numbers.contentformat import ContentFormat
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper
from aiocoap.tokenmanager import TokenManager
from aiocoap.transports.oscore import OSCOREAddress
from aiocoap.transports.udp6 import MessageInterfaceUDP6

from gateway.links.base import LinkContext, UplinkRefused
from gateway.links.wake import NeighbourWake, Pusher, listens_always
from gateway.security import node_of, request_seqno
from gateway.uplink import Keyring, decode_uplink, encode_downlinks, open_keyring

log = logging.getLogger(__name__)

NAME = "coap"
UPLINK_PATH = ("u",)
LAMP_PATH = "d"
# RFC 7252 §4.6 without path-MTU knowledge: a message is at most 1152 bytes, a payload 1024.
MAX_DATAGRAM = 1152
MAX_PAYLOAD = 1024
UNAVAILABLE_RETRY_S = 30  # Max-Age of a 5.03: when the node may try again
DRAIN_S = 5.0  # at shutdown, how long uplinks in the middle of their commit may take
_UNPARSABLE = "Ignoring unparsable message from %s"  # aiocoap udp6's log line for non-CoAP


class NodeTuning(TransportTuning):  # type: ignore[misc]
    """aiocoap's defaults, but the empty ACK waits 1 s instead of 0.1 s.

    A node's first retransmission comes after 2-3 s (ACK_TIMEOUT), so a 2.04 sent within 1 s
    is still piggybacked on the ACK: one round trip for the node (less radio time) and for
    us (no separate confirmable response to track and have acknowledged). Only a commit
    slower than a second costs the empty ACK and the separate response.
    """

    EMPTY_ACK_DELAY = 1.0


NODE_TUNING = NodeTuning()


def create(context: LinkContext) -> CoAPLink:
    return CoAPLink(context)


class CoAPLink:
    name = NAME

    def __init__(self, context: LinkContext) -> None:
        self.context = context
        self.settings = context.config.links.coap
        self.addresses: dict[str, str] = {}  # node id -> "host:port" its uplinks come from
        self.keyring: Keyring | None = None
        self.server: aiocoap.Context | None = None
        self.port: int | None = None
        self.wake = NeighbourWake(context.registry, context.downlinks)
        self.pusher: Pusher | None = None
        self.closing = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def refuse(self, reason: str, node_id: str | None = None, detail: str = "") -> None:
        self.context.pipeline.refuse(self.name, reason, node_id, detail)

    async def start(self) -> None:
        self.keyring = open_keyring(self.context.config.security.keys_dir)
        try:
            site = UplinkSite(UplinkResource(self))
            guarded = GuardedSite(site, CountingCredentials(self.keyring.credentials, self))
            self.server = await aiocoap.Context.create_server_context(
                guarded,
                bind=(self.settings.bind, self.settings.port),
                transports=["oscore", "udp6"],
            )
            self.port = self._watch_datagrams(self.server)
        except BaseException:
            if self.server is not None:
                await self.server.shutdown()
                self.server = None
            self.keyring.close()
            self.keyring = None
            raise
        self.context.registry.listeners.append(self._registry_changed)
        self.pusher = Pusher(
            self.name,
            self.context.registry,
            self.context.downlinks,
            self.push,
            lambda node_id: node_id in self.addresses,
        )
        log.info("CoAP link listening on %s:%s", self.settings.bind, self.port)

    def _watch_datagrams(self, server: aiocoap.Context) -> int:
        """Count (and drop) oversized and non-CoAP datagrams; returns the bound port."""
        for interface in server.request_interfaces:
            messages = getattr(interface, "token_interface", None)
            udp = getattr(messages, "message_interface", None)
            if isinstance(interface, TokenManager) and isinstance(udp, MessageInterfaceUDP6):
                break
        else:
            raise RuntimeError("aiocoap created no udp6 transport")
        deliver = udp.datagram_msg_received

        def received(data: bytes, ancdata: Any, flags: int, address: Any) -> None:
            if len(data) > MAX_DATAGRAM:
                self.refuse("oversized", detail=f"{len(data)}-byte datagram")
                return
            deliver(data, ancdata, flags, address)

        udp.datagram_msg_received = received

        # Every request gets the link's transport tuning (see NodeTuning), set before aiocoap's
        # message layer starts its empty-ACK timer.
        manager = udp._ctx
        dispatch = manager.dispatch_message

        def tuned(message: aiocoap.Message) -> None:
            message.transport_tuning = NODE_TUNING
            dispatch(message)

        manager.dispatch_message = tuned

        def unparsable(record: logging.LogRecord) -> bool:
            if record.msg == _UNPARSABLE:
                self.refuse("malformed", detail="not a CoAP message")
                return False  # counted (and logged rate-limited by the pipeline)
            return True

        udp.log.addFilter(unparsable)
        self._log_filter = (udp.log, unparsable)
        return int(udp.transport.get_extra_info("socket").getsockname()[1])

    def _registry_changed(self) -> None:
        if self.keyring is not None:
            self.keyring.load_new(force=True)

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.context.registry.listeners.remove(self._registry_changed)
        # Uplinks being committed finish and get their answer before the socket goes (aiocoap
        # would otherwise fire their empty-ACK timers at a closed transport); new ones get 5.03.
        self.closing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), DRAIN_S)
        if self.pusher is not None:
            await self.pusher.close()
        await self.wake.close()
        if self.server is not None:
            await self.server.shutdown()
            logger, unparsable = self._log_filter
            logger.removeFilter(unparsable)
            self.server = None
        if self.keyring is not None:
            self.keyring.close()
            self.keyring = None

    # -- uplinks -------------------------------------------------------------------------------

    async def uplink(self, request: aiocoap.Message) -> aiocoap.Message:
        if self.closing:
            return aiocoap.Message(code=aiocoap.SERVICE_UNAVAILABLE, max_age=UNAVAILABLE_RETRY_S)
        node_id = node_of(request)
        seqno = request_seqno(request)
        if node_id is None or seqno is None:  # GuardedSite refuses these first
            self.refuse("unauthenticated")
            raise error.Unauthorized("OSCORE required")
        if request.code != aiocoap.POST:
            self.refuse("malformed", node_id, f"method {request.code}")
            raise error.MethodNotAllowed()
        if len(request.payload) > MAX_PAYLOAD:
            self.refuse("oversized", node_id, f"{len(request.payload)}-byte payload")
            raise error.RequestEntityTooLarge(f"payload over {MAX_PAYLOAD} bytes")
        try:
            uplink = decode_uplink(node_id, seqno, request.payload, time.time(), link=self.name)
        except UplinkRefused as refused:
            self.refuse(refused.reason, node_id, refused.detail)
            raise error.BadRequest(refused.detail) from None
        self._inflight += 1
        self._idle.clear()
        try:
            downlinks = await self.context.pipeline.handle(uplink)
        except UplinkRefused as refused:  # counted by the pipeline
            if refused.reason == "unknown_node":
                raise error.Forbidden("unknown node") from None
            if refused.reason == "unavailable":
                return aiocoap.Message(
                    code=aiocoap.SERVICE_UNAVAILABLE, max_age=UNAVAILABLE_RETRY_S
                )
            raise error.BadRequest(refused.detail or refused.reason) from None
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()
        # Committed: from here on the node may forget these readings.
        if listens_always(self.context.registry.get(node_id)):
            self._remember_address(node_id, request)
        payload, _ = encode_downlinks(downlinks, MAX_PAYLOAD)
        self.wake.after_commit(uplink)
        if not payload:
            return aiocoap.Message(code=aiocoap.CHANGED)
        return aiocoap.Message(
            code=aiocoap.CHANGED, payload=payload, content_format=ContentFormat.CBOR
        )

    def _remember_address(self, node_id: str, request: aiocoap.Message) -> None:
        try:
            hostinfo = str(request.remote.hostinfo)
        except (AttributeError, error.AnonymousHost):
            return
        old = self.addresses.get(node_id)
        if old == hostinfo or self.server is None or self.keyring is None:
            return
        context = self.keyring.credentials.get(":" + node_id)
        if context is None:
            return
        credentials = self.server.client_credentials
        if old is not None:
            credentials.pop(f"coap://{old}/*", None)
        # The very context that serves this node's requests: one sender sequence for both roles.
        credentials[f"coap://{hostinfo}/*"] = context
        self.addresses[node_id] = hostinfo

    # -- pushes to always-listening nodes ------------------------------------------------------

    async def push(self, node_id: str, downlinks: list[Any]) -> bool:
        hostinfo = self.addresses.get(node_id)
        if hostinfo is None or self.server is None:
            return False
        payload, included = encode_downlinks(downlinks, MAX_PAYLOAD)
        if not payload:
            return False
        request = aiocoap.Message(
            code=aiocoap.POST,
            uri=f"coap://{hostinfo}/{LAMP_PATH}",
            payload=payload,
            content_format=ContentFormat.CBOR,
        )
        response = await self.server.request(request).response
        ok = bool(response.code == aiocoap.CHANGED)
        if not ok:
            log.warning("push to %s answered %s", node_id, response.code)
        return ok and len(included) == len(downlinks)


class UplinkResource(resource.Resource):  # type: ignore[misc]
    def __init__(self, link: CoAPLink) -> None:
        super().__init__()
        self.link = link

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        return await self.link.uplink(request)


class UplinkSite(resource.Site):  # type: ignore[misc]
    """A `resource.Site` that hands `POST /u` to its resource without the site's lookup.

    `Site` finds a request's resource by copying the request without its path, and the copy
    deep-copies every option (plus the request URI built for the copy): measured with
    bench/ingest.py, about a tenth of the event loop's time per uplink. The uplink resource
    needs neither the stripped path nor the URI, so its own path skips both; any other path
    (and a path given as Uri-Path-Abbrev, which `Site` resolves first) takes the `Site` way.
    Written against aiocoap 0.4.17 (pinned in pyproject.toml) `Site.render_to_pipe`.
    """

    def __init__(self, uplinks: UplinkResource) -> None:
        super().__init__()
        self.add_resource(UPLINK_PATH, uplinks)
        self.uplinks = uplinks

    async def render_to_pipe(self, pipe: Any) -> None:
        opt = pipe.request.opt
        if opt.uri_path == UPLINK_PATH and opt.uri_path_abbrev is None:
            await self.uplinks.render_to_pipe(pipe)
        else:
            await super().render_to_pipe(pipe)


class GuardedSite(OscoreSiteWrapper):  # type: ignore[misc]
    """aiocoap's OSCORE wrapper, minus its pass-through of unprotected requests, rendering
    the inner request in the request's own task.

    `render_to_pipe` is aiocoap 0.4.17's `OscoreSiteWrapper.render_to_pipe` (pinned in
    pyproject.toml; compare it when upgrading) with two changes: unprotected requests are
    refused, and the inner site renders inline instead of in a task of its own (aiocoap's
    FIXME there asks for exactly that). That task cost over a tenth of the event loop's time
    per uplink (bench/ingest.py), mostly in formatting its name: a repr of the request and
    of both its addresses. Inline is equivalent for this site: every request is answered
    once, with a last response, so its events are all queued when rendering returns; a peer
    that loses interest cancels the request's task, which now includes the rendering, as
    the inner task was cancelled with it before. Exceptions become responses through
    aiocoap's own `error_to_message`, as in its task. EDHOC requests go to aiocoap's code.
    """

    def __init__(self, site: UplinkSite, credentials: CountingCredentials) -> None:
        super().__init__(site, credentials)
        self.site = site  # ours: not the wrapper's private `_inner_site`
        self.counting = credentials

    async def render_to_pipe(self, pipe: Any) -> None:
        request = pipe.request
        if request.opt.oscore is None:
            self.counting.link.refuse("unauthenticated", detail="no OSCORE option")
            raise error.Unauthorized("OSCORE required")
        if request.opt.uri_path == (".well-known", "edhoc"):
            await super().render_to_pipe(pipe)
            return
        unprotected = oscore.verify_start(request)  # has an OSCORE option: cannot refuse
        if request.code not in (aiocoap.FETCH, aiocoap.POST):
            raise error.MethodNotAllowed
        try:
            sc = self.server_credentials.find_oscore(unprotected)
        except KeyError:
            if request.mtype == aiocoap.CON:
                raise error.Unauthorized("Security context not found") from None
            return
        try:
            unprotected, seqno = sc.unprotect(request)
        except error.RenderableError:  # the 4.01 Echo recovery: rendered unprotected
            raise
        except oscore.ReplayError:
            if request.mtype == aiocoap.CON:
                replay = aiocoap.Message(
                    code=aiocoap.UNAUTHORIZED, max_age=0, payload=b"Replay detected"
                )
                pipe.add_response(replay, is_last=True)
            return
        except oscore.DecodeError:
            if request.mtype == aiocoap.CON:
                raise error.BadOption("Failed to decode COSE") from None
            return
        except oscore.ProtectionInvalid:
            if request.mtype == aiocoap.CON:
                raise error.BadRequest("Decryption failed") from None
            return
        unprotected.remote = OSCOREAddress(sc, request.remote)
        sc = sc.context_for_response()

        inner_pipe = aiocoap.pipe.IterablePipe(unprotected)
        rendering = aiocoap.pipe.error_to_message(inner_pipe, self.log)
        try:
            await self.site.render_to_pipe(rendering)
        except Exception as exc:  # noqa: BLE001 -- rendered into a response, as aiocoap does
            rendering.add_exception(exc)
        async for event in inner_pipe:
            if event.exception is not None:
                self.log.warning("Renderer raised %r: answered 5.00", event.exception)
                message, is_last = aiocoap.Message(code=aiocoap.INTERNAL_SERVER_ERROR), True
            else:
                message, is_last = event.message, event.is_last
            if not is_last:
                message.opt.observe = 0
            protected, _ = sc.protect(message, seqno)
            if message.opt.observe is not None:
                protected.opt.observe = sc.sender_sequence_number & 0xFFFFFFFF
            pipe.add_response(protected, is_last=is_last)
            if event.is_last:
                break


class CountingCredentials:
    """The server credentials as the wrapper sees them: each failure counted by its reason."""

    def __init__(self, inner: Any, link: CoAPLink) -> None:
        self.inner = inner
        self.link = link

    def find_oscore(self, unprotected: Any) -> Any:
        try:
            found = self.inner.find_oscore(unprotected)
        except KeyError:
            keyring = self.link.keyring
            found = None
            if keyring is not None and keyring.load_new():  # provisioned a moment ago?
                with contextlib.suppress(KeyError):
                    found = self.inner.find_oscore(unprotected)
            if found is None:
                kid = unprotected.get(oscore.COSE_KID, b"")
                self.link.refuse("unknown_kid", detail=f"kid {bytes(kid).hex()}")
                raise
        found.on_refused = self._refused  # a gateway.security context: one per request
        return found

    def _refused(self, node: str, exc: Exception) -> None:
        if isinstance(exc, oscore.ReplayErrorWithEcho):
            log.info("Echo challenge to %s (replay window not known after a restart)", node)
        elif isinstance(exc, oscore.DecodeError):
            self.link.refuse("malformed", node, "OSCORE option or COSE object undecodable")
        elif isinstance(exc, oscore.ReplayError):
            self.link.refuse("replay", node, "sequence number seen before")
        elif isinstance(exc, oscore.ProtectionInvalid):
            self.link.refuse("bad_tag", node, "decryption failed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
