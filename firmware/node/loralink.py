# The LoRa link: the same OSCORE-protected CoAP POST as over UDP, as the payload of a raw LoRa
# frame. Routine uplinks are NON (sent once, never repeated); alarms go confirmable and are
# repeated in later RX windows until acknowledged. After every transmission the radio opens an
# RX window for the gateway's response and its downlinks. Every transmission is checked against
# the EU868 duty-cycle ledger first (protocol.airtime); a refused one raises DutyCycle and the
# records wait in the flash ring.

from firmware.node.coaplink import LinkDown, finish, request
from protocol import airtime, coap, oscore_client
from protocol.oscore import piv_bytes

# OSCORE adds to the plain CoAP request: 1 inner code byte, the 8-byte tag, the OSCORE option
# (1 header byte, 1 flag byte, the Partial IV, the kid)
_OSCORE_FIXED = 11
IDLE_MS = 20
# One byte of token: matching a response in the RX window needs little, and SF12 frames carry
# 51 bytes in all (the 4 bytes of the UDP link's token would be 6 % of them)
TOKEN_LEN = 1


class DutyCycle(LinkDown):
    """The ledger refuses the transmission for `wait_s` more seconds."""

    def __init__(self, wait_s):
        super().__init__("duty cycle: wait %d s" % wait_s)
        self.wait_s = wait_s


class LoRaLink:
    name = "lora"

    def __init__(self, board, cfg, context, ledger, *, clock, on_record=None, light_sleep=True):
        self.board = board
        self.cfg = cfg
        self.context = context
        self.ledger = ledger
        self.clock = clock  # node seconds (monotonic across deep sleep): the ledger's time
        self.on_record = on_record  # called after each ledger entry, to keep it in RTC memory
        self.mids = coap.MessageIds()
        settings = {
            "freq_hz": cfg["freq_hz"],
            "sf": cfg["sf"],
            "bw_hz": cfg["bw_hz"],
            "cr": cfg["cr"],
            "preamble": cfg["preamble"],
            "power_dbm": cfg["power_dbm"],
        }
        if not light_sleep:
            # a lamp's PWM stops in ESP32 light sleep: its radio waits keep the CPU awake
            settings["sleep_ms"] = board.sleep_ms
        self.radio = board.lora(**settings)
        self.sends = 0
        self.idle = None  # an always-on node's background work, run while listening
        self.requests = []  # type: list
        self.feed = None  # the runtime's watchdog feed, called once per transmission
        self.airtime_ms = 0
        self.rssi_dbm = None
        self.snr_db = None

    def max_payload(self):
        """Bytes of uplink payload (CBOR) that fit one frame with CoAP and OSCORE around it."""
        cfg = self.cfg
        frame = airtime.max_payload(cfg["sf"], cfg["bw_hz"])
        # CoAP header 4 + token + Uri-Path (1 + len) + Content-Format 2 + payload marker 1
        plain = 4 + TOKEN_LEN + 1 + len(self.cfg.get("path", "u")) + 2 + 1
        # the Partial IV of the next request (a repeat after Echo may need one byte more)
        piv = len(piv_bytes(self.context.sequence.value + 1))
        return frame - plain - _OSCORE_FIXED - piv - len(self.context.sender_id)

    def airtime(self, n):
        cfg = self.cfg
        return airtime.time_on_air_ms(
            n, cfg["sf"], cfg["bw_hz"], cfg["cr"], cfg["preamble"], True, True
        )

    def transmit(self, frame):
        cfg = self.cfg
        toa = self.airtime(len(frame))
        now = self.clock()
        if not self.ledger.can_send(cfg["freq_hz"], toa, now, cfg["bw_hz"]):
            raise DutyCycle(self.ledger.wait_s(cfg["freq_hz"], toa, now, cfg["bw_hz"]))
        # the ledger is written before the radio keys up: a crash mid-frame overcounts, never
        # under
        self.ledger.record(cfg["freq_hz"], toa, now, cfg["bw_hz"])
        if self.on_record is not None:
            self.on_record()
        self.sends += 1
        self.airtime_ms += toa
        if self.feed is not None:
            self.feed()
        if not self.radio.send(frame):
            raise LinkDown("radio: no TxDone")

    def _window(self, token):
        """Frames heard in the RX window until one carries our token; None when it closes."""
        board = self.board
        end = board.ticks_add(board.ticks_ms(), self.cfg["rx_window_ms"])
        if self.idle is not None:
            self.radio.start_receive()
        while True:
            left = board.ticks_diff(end, board.ticks_ms())
            if left <= 0:
                return None
            if self.idle is None:
                data = self.radio.receive(left)
                if data is None:
                    return None
            else:
                # an always-on node keeps its lamp fading while it listens
                self.idle()
                data = self.radio.poll()
                if data is None:
                    board.sleep_ms(min(left, IDLE_MS))
                    continue
            try:
                msg = coap.decode(data)
            except ValueError:
                continue  # someone else's frame, or noise
            if msg.type in (coap.CON, coap.NON) and 0 < msg.code < 32:
                self.requests.append((data, None))  # for the server part (lamp wake-ups)
                continue
            if msg.token == token and msg.code >> 5 >= 2:
                self.rssi_dbm = self.radio.rssi_dbm
                self.snr_db = self.radio.snr_db
                if msg.type == coap.CON:
                    self.transmit(coap.ack_for(msg).encode())
                return data

    def exchange(self, payload, confirmed=False):
        """Send the payload; the response payload, or None for a NON nobody answered."""
        mtype = coap.CON if confirmed else coap.NON
        req = request(self.mids, mtype, self.cfg.get("path", "u"), payload, TOKEN_LEN)
        ex = oscore_client.Exchange(self.context, req.encode())
        out = ex.first()
        tries = self.cfg["confirmed_tries"] if confirmed else 1
        left = tries
        while True:
            token = coap.decode(out).token
            self.transmit(out)
            data = self._window(token)
            if data is None:
                left -= 1
                if left <= 0:
                    if confirmed:
                        raise LinkDown("no acknowledgement in %d windows" % tries)
                    return None
                continue  # a CON retransmission is the identical frame (same id, same PIV)
            action, out = ex.on_response(data, self.mids.next())
            if action == oscore_client.DONE:
                return finish(out)

    def close(self):
        self.radio.sleep()
