# The LoRa link: the same OSCORE-protected CoAP POST as over UDP, as the payload of a raw LoRa
# frame. Routine uplinks are NON (sent once, never repeated); alarms go confirmable and are
# repeated in later RX windows until acknowledged. Every transmission is checked against the
# EU868 duty-cycle ledger first (protocol.airtime); a refused one raises DutyCycle and the
# records wait in the flash ring.
#
# RX window (LoRaWAN class A's way, firmware/README.md "LoRa timing"): the gateway starts its
# answer exactly RX_DELAY_MS after the end of the uplink (TxDone at the node, RxDone at the
# gateway). A battery node puts the radio to sleep and light-sleeps through the delay, wakes
# RX_ERROR_MS early and opens one RXSINGLE window of rx_symbols(sf) symbols: long enough to
# catch a preamble that starts up to RX_ERROR_MS early or late, so a silent gateway (a NON with
# nothing to say, the usual case) costs tens of ms of receiver, not seconds. A mains-powered
# node (lamp) listens continuously instead, until the answer would have ended.

from micropython import const

from firmware.node.link import LinkDown, finish, request
from protocol import airtime, coap, oscore_client
from protocol.oscore import piv_bytes

# Gateway and node agree on these (gateway/links/lora.py must answer at RX_DELAY_MS)
RX_DELAY_MS = const(1000)  # uplink end -> start of the gateway's answer (LoRaWAN RECEIVE_DELAY1)
RX_ERROR_MS = const(20)  # timing error tolerated each way: node light-sleep wake + gateway
RX_DETECT_SYMBOLS = const(6)  # preamble symbols the SX127x needs to lock (gateway sends 8)
RX_MIN_SYMBOLS = const(8)
# OSCORE adds to the plain CoAP request: 1 inner code byte, the 8-byte tag, the OSCORE option
# (1 header byte, 1 flag byte, the Partial IV, the kid)
_OSCORE_FIXED = const(11)
_IDLE_MS = const(20)
# One byte of token: matching a response in the RX window needs little, and SF12 frames carry
# 51 bytes in all (the 4 bytes of the UDP link's token would be 6 % of them)
TOKEN_LEN = const(1)


def rx_symbols(sf, bw_hz=125000):
    """RXSINGLE symbol timeout: a preamble starting anywhere in the +-RX_ERROR_MS span must be
    found (and locked: RX_DETECT_SYMBOLS more) before the receiver gives up."""
    sym_us = (1 << sf) * 1000000 // bw_hz
    span = (2 * RX_ERROR_MS * 1000 + sym_us - 1) // sym_us
    return max(RX_MIN_SYMBOLS, min(1023, span + RX_DETECT_SYMBOLS))


def rx_window_ms(sf, bw_hz=125000):
    """How long the receiver listens when nothing comes (the battery cost of a silent gateway)."""
    return (rx_symbols(sf, bw_hz) * (1 << sf) * 1000 + bw_hz - 1) // bw_hz


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
        sf = cfg["sf"]
        bw = cfg["bw_hz"]
        settings = {
            "freq_hz": cfg["freq_hz"],
            "sf": sf,
            "bw_hz": bw,
            "cr": cfg["cr"],
            "preamble": cfg["preamble"],
            "power_dbm": cfg["power_dbm"],
            "rx_symbols": rx_symbols(sf, bw),
        }
        if light_sleep:
            # a battery node: the SX127x sleeps (0.2 uA, registers kept) rather than stands by
            # (1.6 mA) through the RX delay
            settings["sleep_after_tx"] = True
        else:
            # a lamp's PWM stops in ESP32 light sleep: its radio waits keep the CPU awake
            settings["sleep_ms"] = board.sleep_ms
        self.radio = board.lora(**settings)
        # the receive call's bound: the search, then the longest answer the gateway may send
        # (a simulated radio cannot stop at the symbol timeout, so it listens this long)
        self._answer_ms = int(self.airtime(airtime.max_payload(sf, bw))) + 1
        self.sends = 0
        self.idle = None  # an always-on node's background work, run while listening
        self.requests = []  # type: list
        self.feed = None  # the runtime's watchdog feed, called once per transmission
        self.airtime_ms = 0
        self.rx_ms = 0  # receiver time the windows would cost on an SX127x (for the bench)
        self.rssi_dbm = None
        self.snr_db = None

    def max_payload(self):
        """Bytes of uplink payload (CBOR) that fit one frame with CoAP and OSCORE around it."""
        cfg = self.cfg
        frame = airtime.max_payload(cfg["sf"], cfg["bw_hz"])
        # CoAP header 4 + token + Uri-Path (1 + len) + Content-Format 2 + payload marker 1
        plain = 4 + TOKEN_LEN + 1 + len(cfg.get("path", "u")) + 2 + 1
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
        """The gateway's answer to the frame just sent (it carries our token), or None."""
        board = self.board
        radio = self.radio
        if self.idle is None:
            # a battery node: the CPU light-sleeps (the radio sleeps since TxDone) until the
            # answer is due
            board.light_sleep_ms(RX_DELAY_MS - RX_ERROR_MS)
            data = radio.receive(rx_window_ms(self.cfg["sf"], self.cfg["bw_hz"]) + self._answer_ms)
            self.rx_ms += rx_window_ms(self.cfg["sf"], self.cfg["bw_hz"])
            # RXSINGLE ends with the first frame heard: ours, or the window is lost
            return None if data is None else self._ours(data, token)
        # an always-on node keeps its lamp fading while it listens, in continuous receive
        end = board.ticks_add(
            board.ticks_ms(),
            max(self.cfg["rx_window_ms"], RX_DELAY_MS + RX_ERROR_MS + self._answer_ms),
        )
        radio.start_receive()
        while board.ticks_diff(end, board.ticks_ms()) > 0:
            self.idle()
            data = radio.poll()
            if data is None:
                board.sleep_ms(min(board.ticks_diff(end, board.ticks_ms()), _IDLE_MS))
                continue
            data = self._ours(data, token)
            if data is not None:
                return data
        return None

    def _ours(self, data, token):
        """data when it answers our request (a CON answer is acknowledged), else None."""
        try:
            msg = coap.decode(data)
        except ValueError:
            return None  # someone else's frame, or noise
        if msg.type in (coap.CON, coap.NON) and 0 < msg.code < 32:
            self.requests.append((data, None))  # for the server part (lamp wake-ups)
            return None
        if msg.token != token or msg.code >> 5 < 2:
            return None
        radio = self.radio
        self.rssi_dbm = radio.rssi_dbm
        self.snr_db = radio.snr_db
        if msg.type == coap.CON:
            self.transmit(coap.ack_for(msg).encode())
        return data

    def exchange(self, payload, confirmed=False):
        """Send the payload; the response payload, or None for a NON nobody answered."""
        mtype = coap.CON if confirmed else coap.NON
        req = request(self.mids, mtype, self.cfg.get("path", "u"), payload, TOKEN_LEN)
        ex = oscore_client.Exchange(self.context, req.encode())
        out = ex.first()
        del req
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
