# The node runtime: start-up, boot-loop guard, one reporting cycle, deep sleep.
#
# Start-up: RTC state (node/rtcstate.py) and config (node/config.py) are loaded; every boot
# counts as a try until a cycle completes. After `boot_tries` failed boots in a row the node
# comes up in safe mode: no watchdog, no kind, one status uplink naming the problem, then back
# to the REPL so mpremote can reach it. Recovery: fix what is wrong (mpremote fs cp config.json
# :), then `import firmware.node.app as a; a.leave_safe_mode()` (or a power cycle).
#
# A cycle (battery kinds; lighting never sleeps: node/mains.py): sample the kind, queue its
# records (alarms first), add a status when due, send everything with whatever waits in the
# flash ring (node/send.py), apply the downlinks of the response, store what could not be
# sent, deep-sleep until the kind or the status timer wants the next cycle. The watchdog is
# fed by this code path only: a hang anywhere resets the node.

import gc
import sys

from firmware.node import config, rtcstate
from protocol import schema

FIRMWARE = "0.1.0"
ERROR_LEN = 32
# reset causes of the board -> the schema's names
_CAUSES = {"watchdog": "wdt"}


def _status_names():
    for spec in schema.UPLINK[schema.UP_STATUS][1]:
        yield spec[1]


class Node:
    def __init__(self, board):
        self.board = board
        self.state = rtcstate.load(board)
        self.cause = board.reset_cause()
        self.errors = []  # type: list
        self.fresh = []  # type: list  # (wire map, alarm) to send this cycle
        self.acks = []  # type: list
        self.reboot = False
        self.wake_cap = 0  # a downlink's new report period caps this cycle's sleep
        self.identify_s = 0
        self.kind = None
        self.link = None
        self.ring = None
        self.feed = _nothing
        self.safe = False
        self.sent = 0
        self.tasks = []  # type: list

    # -- clocks --------------------------------------------------------------------------------
    def now(self):
        """Node seconds: the board's clock minus every time-sync step (never jumps)."""
        return self.board.time() - self.state.get("shift", 0)

    def tod(self):
        """Local seconds since midnight once the gateway's time has arrived, else None."""
        tz = self.state.get("tz")
        if tz is None:
            return None
        return (self.board.time() + tz * 60) % 86400

    def set_time(self, unix_s, utc_offset_min):
        step = unix_s - self.board.time()
        self.board.set_time(unix_s)
        self.state["shift"] = self.state.get("shift", 0) + step
        self.state["tz"] = utc_offset_min

    # -- start-up ----------------------------------------------------------------------------
    def boot(self):
        board = self.board
        st = self.state
        if not st or self.cause == "power_on":
            st.clear()
            st["pon"] = board.time()
        if st.pop("panic", 0):
            self.cause = "panic"
        st["boots"] = st.get("boots", 0) + 1
        st["tries"] = st.get("tries", 0) + 1
        # written at once: a crash from here on must count as a failed boot
        rtcstate.save(board, st)
        self.cfg, errors = config.load(board)
        for e in errors:
            self.error(e)
        self.safe = st["tries"] > self.cfg["boot_tries"]
        print("node: boot %d (%s), try %d" % (st["boots"], self.cause, st["tries"]))

    def error(self, text):
        print("node:", text)
        self.errors.append(text)
        if not self.state.get("err"):
            self.state["err"] = text[:ERROR_LEN]

    def make_kind(self):
        from firmware import kinds

        cls = kinds.load(self.cfg["kind"])
        saved = self.state.get("kind")
        try:
            kind = cls(self.cfg["kind_config"], saved)
        except ValueError as e:
            self.error("kind_config: %s" % e)
            self.cfg["kind_config"] = {}
            kind = cls(None, saved)
        self.kind = kind
        return kind

    def _counter(self):
        from firmware.node.seqstore import SeqStore
        from protocol.oscore_seq import SenderSequence

        return SenderSequence(SeqStore(self.board, self.state, "rseq", "rseq.bin"), 64)

    def open_ring(self):
        from firmware.node.ring import Ring

        self.ring = Ring(self.board, "ring.bin", self.cfg["ring_slots"])
        if self.ring.torn:
            self.error("ring: %d torn record(s) skipped" % self.ring.torn)
        self.rseq = self._counter()

    # -- records -------------------------------------------------------------------------------
    def queue(self, msg, alarm=False):
        msg = dict(msg)
        msg["seq"] = self.rseq.next()
        try:
            wire = schema.encode_uplink(msg)[1]
        except ValueError as e:
            self.error("record: %s" % e)
            return
        self.fresh.append((wire, alarm))

    def take(self, out):
        """Queue what a kind's step() or command() returned."""
        for msg in out.get("alarms") or ():
            self.queue(msg, True)
        for msg in out.get("events") or ():
            self.queue(msg)
        if out.get("reading"):
            self.queue(out["reading"])
        return out.get("wake_s") or 60

    def status_due(self):
        due = self.state.get("due_status")
        return (
            due is None
            or self.now() >= due
            or self.cause not in ("deep_sleep", "soft")
            or bool(self.state.get("err"))
        )

    def queue_status(self, battery=None):
        st = self.state
        msg = {
            "type": "status",
            "uptime_s": max(0, self.now() - st.get("pon", self.now())),
            "reset_cause": _CAUSES.get(self.cause, self.cause),
            "firmware": FIRMWARE,
            "free_heap_b": gc.mem_free(),
            "boot_count": st.get("boots", 1),
            "buffered": len(self.ring) if self.ring is not None else 0,
            "rssi_dbm": st.get("rssi"),
            "snr_db_x4": st.get("snr"),
            "battery_mv": battery,
            # reported once the schema carries them (until then the console shows them)
            "error": st.get("err"),
            "safe_mode": self.safe or None,
            "confirm": self.acks or None,
        }
        cfg = self.cfg
        if cfg["link"] == "lora" and cfg["lora"]["sf"] >= 10:
            # 51-byte frames at SF10-12: the version and heap go on the faster data rates only
            msg["firmware"] = msg["free_heap_b"] = msg["snr_db_x4"] = None
        known = list(_status_names())
        for key in list(msg):
            if msg[key] is None or (key != "type" and key not in known):
                del msg[key]
        if msg["reset_cause"] not in schema.RESET_CAUSES:
            msg["reset_cause"] = "unknown"
        self.queue(msg)
        st["due_status"] = self.now() + self.cfg["status_s"]
        st["err_sent"] = st.get("err")

    # -- the link (node/send.py) ---------------------------------------------------------------
    def open_link(self):
        from firmware.node import send

        return send.open_link(self)

    def flush(self):
        from firmware.node import send

        send.flush(self)

    # -- the cycle of a battery node -----------------------------------------------------------
    def cycle(self):
        from firmware.node import hw

        board = self.board
        cfg = self.cfg
        self.feed = board.watchdog(cfg["watchdog_ms"]).feed
        self.open_ring()
        kind = self.make_kind()
        sensors = hw.sensors(board, cfg, cfg["kind"], self.errors)
        battery = hw.battery(board, cfg, self.errors)
        wake_s = self.take(kind.sample(sensors, self.now(), self.tod()))
        self.feed()
        if self.status_due():
            self.queue_status(battery.read_mv() if battery is not None else None)
        self.flush()
        self.finish(wake_s)

    def next_wake_s(self, wake_s):
        status_in = self.state.get("due_status", 0) - self.now()
        if self.wake_cap:
            wake_s = min(wake_s, self.wake_cap)
        return max(1, min(wake_s, max(1, status_in)))

    def finish(self, wake_s):
        st = self.state
        if self.kind is not None:
            st["kind"] = self.kind.save()
        st["tries"] = 0  # this boot completed a cycle: not a boot loop
        rtcstate.save(self.board, st)
        if self.link is not None:
            self.link.close()
        if self.ring is not None:
            self.ring.close()
        if self.reboot:
            self.board.reset()
        self.board.deep_sleep(self.next_wake_s(wake_s) * 1000)

    def safe_mode(self):
        """Status only, then the REPL: no watchdog, no kind, no deep sleep."""
        print("node: SAFE MODE after %d failed boots; REPL free" % (self.state["tries"] - 1))
        self.safe = True
        self.error("safe mode: %s" % (self.state.get("err") or "boot loop"))
        try:
            self.open_ring()
            self.queue_status()
            self.flush()
        except Exception as e:  # noqa: BLE001 - safe mode must reach the REPL whatever happens
            print("node: safe-mode status not sent:", e)
        rtcstate.save(self.board, self.state)


def _nothing():
    pass


def leave_safe_mode():
    """For the technician at the REPL: clear the boot-loop counter, then reset."""
    from firmware import boards

    board = boards.load()
    st = rtcstate.load(board)
    st["tries"] = 0
    st.pop("err", None)
    rtcstate.save(board, st)
    board.reset()


def crash(board, exc):
    """The global exception handler's last act: note the crash, then reset (not a tight
    loop: the boot-loop guard counts these resets)."""
    sys.print_exception(exc)
    try:
        st = rtcstate.load(board)
        st["panic"] = 1
        st["err"] = ("crash: %s %s" % (type(exc).__name__, exc))[:ERROR_LEN]
        rtcstate.save(board, st)
        board.sleep_ms(1000)
    except Exception:  # noqa: BLE001 - nothing more can be done; reset regardless
        pass
    board.reset()


def main():
    from firmware import boards

    board = boards.load()
    try:
        node = Node(board)
        node.boot()
        if node.safe:
            node.safe_mode()
            return
        if node.cfg["kind"] == "lighting":
            from firmware.node import mains

            mains.run(node)
        else:
            node.cycle()
    except Exception as e:  # noqa: BLE001 - the global handler: anything left is a crash
        crash(board, e)
