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
#
# RAM: only what this node needs is imported (its kind, its link, the battery driver when a
# status is due), and what a stage is done with is dropped before the next one (forget()):
# the config tables after start-up, hw and the drivers after sampling, the kind's code and the
# schema before the exchange (park()), the link's modules before a downlink is applied
# (node/send.py). The modules held at the peak of a cycle, the protected exchange, are then
# the link's, the ring's and the codecs'. An always-on lamp (node/mains.py) keeps all loaded.

import gc
import sys

from micropython import const

from firmware.node import rtcstate

FIRMWARE = "0.1.0"
_ERROR_LEN = const(32)
# collect after every 16 KB allocated (boot.py does too): a heap collected only when it is full
# fragments (the cycle needed 202 KB instead of 170 on the unix port); collecting every 4 KB
# needs no less and costs twice the CPU time of the whole cycle's Python work
_GC_THRESHOLD = const(16384)


def forget(*names):
    """Drop modules this boot is done with (their RAM returns once nothing else refers to
    them); a later import loads them again."""
    for name in names:
        if sys.modules.pop(name, None) is None:
            continue
        parent, _, child = name.rpartition(".")
        outer = sys.modules.get(parent)
        if outer is not None and child in outer.__dict__:
            delattr(outer, child)


def forget_all(prefix):
    forget(*[name for name in sys.modules if name.startswith(prefix)])


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
        self._kind = None
        self._parked = False  # the kind's state is in RTC memory, its code dropped: park()
        self.link = None
        self.ring = None
        self.feed = _nothing
        self.safe = False
        # a battery node: drops modules between stages (node/send.py closes the link to apply
        # a downlink); an always-on lamp keeps everything loaded
        self.lean = False
        self.sent = 0
        self.tasks = []  # type: list

    @property
    def kind(self):
        """The kind; built again from its saved state if park() dropped it (a downlink)."""
        if self._kind is None and self._parked:
            self._parked = False
            self.make_kind()
        return self._kind

    @kind.setter
    def kind(self, kind):
        self._kind = kind

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
        fresh = not st or self.cause == "power_on"
        if fresh:
            st.clear()
            st["pon"] = board.time()
        panic = st.pop("panic", 0)
        if panic:
            self.cause = "panic"
        st["boots"] = st.get("boots", 0) + 1
        st["tries"] = st.get("tries", 0) + 1
        # written at once: a crash from here on must count as a failed boot (the counters are
        # in the live part: nothing to encode, unless the body changed too)
        if fresh or panic:
            rtcstate.save(board, st)
        else:
            rtcstate.save_live(board, st)
        from firmware.node import config

        self.cfg, errors = config.load(board)
        for e in errors:
            self.error(e)
        # the OSCORE keys as bytes now, while the config module is loaded (send.context)
        try:
            self.keys = config.oscore_material(self.cfg["oscore"])
        except ValueError as e:
            self.keys = str(e)
        del config
        forget("firmware.node.config", "firmware.node.cfgfile")
        self.safe = st["tries"] > self.cfg["boot_tries"]
        print("node: boot %d (%s), try %d" % (st["boots"], self.cause, st["tries"]))

    def error(self, text):
        print("node:", text)
        self.errors.append(text)
        if not self.state.get("err"):
            self.state["err"] = text[:_ERROR_LEN]

    def make_kind(self):
        from firmware import kinds

        cls = kinds.load(self.cfg["kind"])
        del kinds
        forget("firmware.kinds")  # the kind's module keeps what it uses of the package
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
        from protocol import schema

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
        from firmware.node import status

        status.queue(self, battery)
        del status
        forget("firmware.node.status")

    # -- the link (node/send.py) ---------------------------------------------------------------
    def open_link(self):
        from firmware.node import send

        return send.open_link(self)

    def flush(self):
        from firmware.node import send

        send.flush(self)

    # -- the cycle of a battery node -----------------------------------------------------------
    def cycle(self):
        self.lean = True
        board = self.board
        self.feed = board.watchdog(self.cfg["watchdog_ms"]).feed
        self.open_ring()
        wake_s, battery = self.sample(self.make_kind())
        self.feed()
        if battery is not None:
            self.queue_status(battery)
        elif self.status_due():
            self.queue_status()
        self.park()
        self.flush()
        self.finish(wake_s)

    def park(self):
        """Before the exchange, the peak of a cycle: the kind's state goes to RTC memory and
        its code is dropped (a downlink for it builds it again), and so is the schema (every
        record is encoded by now; a downlink loads it again)."""
        kind = self._kind
        if kind is not None:
            self.state["kind"] = kind.save()
            self._kind = None
            self._parked = True
            forget(type(kind).__module__)
            del kind
        forget("protocol.schema")

    def sample(self, kind):
        """Read the sensors through the kind (and the battery when a status is due); the
        drivers are dropped afterwards. (wake_s, battery mV or None)."""
        from firmware.node import hw

        board = self.board
        cfg = self.cfg
        samples = getattr(kind, "cfg", {}).get("samples", 5)
        sensors = hw.sensors(board, cfg, cfg["kind"], self.errors, samples)
        try:
            wake_s = self.take(kind.sample(sensors, self.now(), self.tod()))
        finally:
            hw.release(sensors)
        battery = None
        if self.status_due():
            gauge = hw.battery(board, cfg, self.errors)
            if gauge is not None:
                battery = gauge.read_mv()
        del hw, sensors
        forget("firmware.node.hw")
        forget_all("firmware.drivers")
        return wake_s, battery

    def next_wake_s(self, wake_s):
        status_in = self.state.get("due_status", 0) - self.now()
        if self.wake_cap:
            wake_s = min(wake_s, self.wake_cap)
        return max(1, min(wake_s, max(1, status_in)))

    def finish(self, wake_s):
        st = self.state
        if self._kind is not None:
            st["kind"] = self._kind.save()
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
        from firmware.node import status

        status.safe_mode(self)


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
        st["err"] = ("crash: %s %s" % (type(exc).__name__, exc))[:_ERROR_LEN]
        rtcstate.save(board, st)
        board.sleep_ms(1000)
    except Exception:  # noqa: BLE001 - nothing more can be done; reset regardless
        pass
    board.reset()


def main():
    from firmware import boards

    gc.threshold(_GC_THRESHOLD)
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
