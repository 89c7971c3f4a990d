# The always-on runtime of a mains-powered node (lighting): never sleeps, keeps the lamp fading
# whatever the network does, and listens for the gateway all the time.
#
# Fast path (detection to light change well under 100 ms): the PIR's pin interrupt, or the
# radar polled every LOOP_MS, calls kind.presence(), which starts the fade on the lamp driver;
# kind.run() ticks it. While an uplink waits for its answer, the links call idle() every 20 ms,
# which ticks the lamp and serves the pins, so the network never holds the light back.
#
# Slow path: every step (kind's wake_s, about a minute) or at once when presence queued an
# event, records go out like a battery node's (node/app.py Node.flush), with the flash ring
# behind them.
#
# The gateway's wake-ups: the lamp serves OSCORE-protected `POST /d` (payload: a downlink array,
# protocol.schema) on its UDP port (config coap.listen_port, where its uplinks come from too),
# or takes the same request from a LoRa frame heard in continuous receive. Answer: 2.04,
# protected. After a boot the lamp has no replay window: the first request gets a protected
# 4.01 with an Echo option (RFC 8613 Appendix B.1.2, RFC 9175) and the repeat carrying it is
# served; aiocoap clients do that repeat on their own, and so does gateway/links/lora.py.
#
# A request it cannot unprotect (not OSCORE, another kid, a tag that does not verify, a replay):
# over UDP an unprotected 4.01 (RFC 8613 section 8.2). Over LoRa nothing: a lamp in continuous
# receive hears every node's uplinks and the gateway's pushes to the other lamps (the same
# gateway kid, another key), and answering them would spend the shared sub-band's 1 % duty cycle
# on frames that were never its own. Such frames are only counted (Server.ignored).

import asyncio
import os

from firmware.node import downlink, hw, rtcstate
from protocol import coap

LOOP_MS = 10
PUSH_PATH = "/d"


class Server:
    """The lamp's side of gateway-initiated requests."""

    def __init__(self, node, context, radio=False):
        self.node = node
        self.context = context
        self.radio = radio  # LoRa: frames not for this lamp get no answer at all
        self.echo = None
        self.fresh = False  # replay window re-established since boot
        self.last = None  # (request bytes, response bytes): a retransmission gets the same
        self.served = 0
        self.ignored = 0  # frames dropped without an answer (not CoAP, not a request, not ours)

    def handle(self, data, reply):
        if self.last is not None and self.last[0] == data:
            reply(self.last[1])  # a CON repeated because our ACK was lost
            return
        try:
            outer = coap.decode(data)
        except ValueError:
            self.ignored += 1
            return
        if not 0 < outer.code < 32:
            self.ignored += 1  # a response (the gateway answering another node): not ours
            return
        try:
            plain, piv = self.context.unprotect_request(data)
        except ValueError as e:
            if self.radio:
                # another node's uplink or a push for another lamp: silence (see the top)
                self.ignored += 1
                print("node: push: ignored %s (%d so far)" % (type(e).__name__, self.ignored))
                return
            # not authenticated: an unprotected 4.01 (RFC 8613 §8.2), nothing else
            self.node.error("push refused: %s" % type(e).__name__)
            mtype = coap.ACK if outer.type == coap.CON else coap.NON
            reply(coap.Message(mtype, coap.UNAUTHORIZED, outer.mid, outer.token).encode())
            return
        request = coap.decode(plain)
        if not self.fresh:
            if self.echo is not None and request.option(coap.ECHO) == self.echo:
                self.fresh = True
            else:
                print("node: push: Echo challenge (no replay window since boot)")
                self.echo = os.urandom(8)
                self._answer((data, outer, piv), coap.UNAUTHORIZED, [(coap.ECHO, self.echo)], reply)
                return
        if coap.uri_path(request) != PUSH_PATH:
            self._answer((data, outer, piv), coap.NOT_FOUND, [], reply)
            return
        if request.code != coap.POST:
            self._answer((data, outer, piv), coap.METHOD_NOT_ALLOWED, [], reply)
            return
        downlink.apply(self.node, request.payload)
        self.served += 1
        self._answer((data, outer, piv), coap.CHANGED, [], reply)

    def _answer(self, request, code, options, reply):
        data, outer, piv = request
        ack = outer.type == coap.CON
        mid = outer.mid if ack else (outer.mid + 1) & 0xFFFF
        mtype = coap.ACK if ack else coap.NON
        plain = coap.Message(mtype, code, mid, outer.token, options).encode()
        protected = self.context.protect_response(plain, self.context.recipient_id, piv)
        self.last = (data, protected)
        reply(protected)


def run(node):
    asyncio.run(_main(node))


def _make_kind(node, lamp):
    from firmware import kinds

    cls = kinds.load("lighting")
    board = node.board
    saved = node.state.get("kind")
    try:
        kind = cls(node.cfg["kind_config"], saved, lamp=lamp, ticks_ms=board.ticks_ms)
    except ValueError as e:
        node.error("kind_config: %s" % e)
        node.cfg["kind_config"] = {}
        kind = cls(None, saved, lamp=lamp, ticks_ms=board.ticks_ms)
    node.kind = kind
    return kind


async def _main(node):
    board = node.board
    cfg = node.cfg
    node.feed = board.watchdog(cfg["watchdog_ms"]).feed
    node.open_ring()
    lamp = hw.lamp(board, cfg, node.errors)
    kind = _make_kind(node, lamp)
    sensors = hw.sensors(board, cfg, "lighting", node.errors)
    radar = sensors.get("radar")
    urgent = [False]
    radar_seen = [False]

    def on_motion(now_ms):
        if kind.presence(now_ms):
            urgent[0] = True

    def fast():
        # the lamp's fast path, also run from inside the links' waits
        board.service()
        if radar is not None:
            radar.poll()
            seen = radar.presence
            if seen and not radar_seen[0]:
                on_motion(board.ticks_ms())
            radar_seen[0] = seen
        kind.tick(board.ticks_ms())

    pir = sensors.get("pir")
    if pir is not None:
        pir.attach(on_motion, board.IRQ_RISING)
    node.tasks.append(asyncio.create_task(kind.run()))  # the fade, for the node's life

    server = None
    try:
        node.link = node.open_link()
    except Exception as e:  # noqa: BLE001 - no link yet: the lamp still lights; retried below
        node.error("link: %s" % e)
    if node.link is not None:
        node.link.idle = fast
        server = Server(node, node.link.context, radio=node.link.name == "lora")
        if node.link.name == "lora":
            node.link.radio.start_receive()

    next_step = board.ticks_ms()
    while True:
        fast()
        node.feed()
        if node.link is not None and server is not None:
            _serve(node, server)
        now = board.ticks_ms()
        if urgent[0] or board.ticks_diff(now, next_step) >= 0:
            urgent[0] = False
            # the slow path samples the PIR level too: someone who stays keeps the light held
            wake_s = node.take(kind.sample(sensors, node.now(), node.tod()))
            if node.status_due():
                node.queue_status()
            if node.fresh:
                node.flush()
                if node.link is not None and node.link.name == "lora":
                    node.link.radio.start_receive()
            node.state["kind"] = kind.save()
            node.state["tries"] = 0  # the loop runs: not a boot loop
            rtcstate.save(board, node.state)
            next_step = board.ticks_add(board.ticks_ms(), wake_s * 1000)
            if node.reboot:
                board.reset()
        await asyncio.sleep_ms(LOOP_MS)


def _serve(node, server):
    from firmware.node.coaplink import LinkDown

    link = node.link
    if link.name == "lora":
        frame = link.radio.poll()
        if frame is not None:
            link.requests.append((frame, None))
    else:
        while True:
            got = link.udp.recvfrom(0)
            if got is None:
                break
            link.requests.append(got)
    while link.requests:
        data, addr = link.requests.pop(0)
        if addr is None:
            reply = link.transmit
        else:

            def reply(out, addr=addr):
                link.udp.sendto(out, addr)

        try:
            server.handle(data, reply)
        except (LinkDown, ValueError, OSError) as e:
            # a reply the duty cycle forbids, or a request that would not decode: dropped
            node.error("push: %s" % e)
        if addr is None:
            link.radio.start_receive()  # transmitting left continuous receive
