"""What a battery node does to save power and RAM, on the MicroPython unix port: the LoRa RX
window opened only when the gateway's answer is due (node/loralink.py), the RTC state's live
part written without encoding (node/rtcstate.py), the bin's ranger paced, powered and stopped
early (node/hw.py), and the modules a cycle drops before its exchange (node/app.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hil.simboard import SimNode
from tests.firmware.node_support import Peer, free_port, need_micropython, run_mpy, write_keys

EPOCH = 1_700_000_000

LINK = """
import json
from firmware.node import loralink
from protocol.airtime import DutyCycleLedger
from protocol.oscore import SecurityContext

events = []


class Radio:
    rssi_dbm = -90
    snr_db = 7.5

    def __init__(self, answers):
        self.answers = answers

    def send(self, frame):
        events.append(["send", len(frame)])
        return True

    def receive(self, timeout_ms):
        events.append(["receive", timeout_ms])
        return self.answers.pop(0) if self.answers else None

    def sleep(self):
        events.append(["sleep"])

    def start_receive(self, continuous=True):
        events.append(["continuous"])

    def poll(self):
        return None


class Board:
    def __init__(self, answers=()):
        self.answers = list(answers)

    def lora(self, **settings):
        events.append(["settings", settings])
        return Radio(self.answers)

    now = 0

    def light_sleep_ms(self, ms):
        events.append(["light", ms])
        self.now += ms

    def sleep_ms(self, ms):
        events.append(["sleep_ms", ms])
        self.now += ms

    def ticks_ms(self):
        return self.now

    def ticks_add(self, t, ms):
        return t + ms

    def ticks_diff(self, a, b):
        return a - b


def link(sf, **cfg):
    base = {"freq_hz": 868100000, "sf": sf, "bw_hz": 125000, "cr": 1, "preamble": 8,
            "power_dbm": 14, "rx_window_ms": 3000, "confirmed_tries": 3}
    base.update(cfg)
    ctx = SecurityContext(bytes(range(16)), b"\\x01", b"")
    return loralink.LoRaLink(Board(), base, ctx, DutyCycleLedger(), clock=lambda: 1000)
"""


def run_link(tmp: Path, body: str) -> Any:
    done = run_mpy(LINK + body, tmp)
    return json.loads(done.stdout.splitlines()[-1])


def test_a_battery_node_sleeps_through_the_rx_delay_and_listens_a_few_symbols(
    tmp_path: Path,
) -> None:
    need_micropython()
    out = run_link(
        tmp_path,
        """
l7 = link(7)
answer = l7.exchange(b"\\x81\\x01")
l12 = link(12)
l12.exchange(b"\\x81\\x01")
print(json.dumps({"events": events, "answer": answer, "rx_ms": [l7.rx_ms, l12.rx_ms],
                  "delay": loralink.RX_DELAY_MS, "error": loralink.RX_ERROR_MS,
                  "symbols": [loralink.rx_symbols(sf) for sf in range(7, 13)],
                  "window": [loralink.rx_window_ms(sf) for sf in (7, 12)]}))
""",
    )
    assert out["delay"] == 1000 and out["error"] == 20
    # ceil(2 x 20 ms / T_sym) + 6, at least 8 (T_sym: SF7 1.024 ms ... SF12 32.768 ms)
    assert out["symbols"] == [46, 26, 16, 11, 9, 8]
    assert out["window"] == [48, 263]  # 46 x 1.024 ms and 8 x 32.768 ms, rounded up
    events = out["events"]
    settings7 = events[0][1]
    assert settings7["power_dbm"] == 14  # EU868: 25 mW ERP
    assert settings7["rx_symbols"] == 46 and settings7["sleep_after_tx"] is True
    assert "sleep_ms" not in settings7  # the radio's own waits light-sleep too
    # TX, light sleep until RX_ERROR_MS before the answer is due, one bounded RXSINGLE window
    # (the window plus the longest answer the gateway may send at this data rate: 222 bytes)
    assert events[1][0] == "send"
    assert events[2] == ["light", 980]
    assert events[3][0] == "receive" and 48 + 330 <= events[3][1] <= 48 + 400
    assert out["answer"] is None  # a NON nobody answered: nothing more
    assert out["rx_ms"] == [48, 263]  # what the windows cost an SX127x
    assert events[4][1]["rx_symbols"] == 8
    assert events[6] == ["light", 980]
    assert events[7][0] == "receive" and 263 + 2000 <= events[7][1] <= 263 + 2600


def test_an_alarm_is_repeated_in_later_windows_and_a_lamp_listens_continuously(
    tmp_path: Path,
) -> None:
    need_micropython()
    out = run_link(
        tmp_path,
        """
con = link(7)
try:
    con.exchange(b"\\x81\\x01", True)
    error = None
except loralink.LinkDown as e:
    error = str(e)
tried = [e[0] for e in events[1:]]
del events[:]
lamp = link(7)
lamp.idle = lambda: None
lamp.board = Board()
lamp.exchange(b"\\x81\\x01")
listened = [e[1] for e in events if e[0] == "sleep_ms"]
print(json.dumps({"error": error, "tried": tried, "lamp": events[:3], "listened": listened}))
""",
    )
    assert out["error"] == "no acknowledgement in 3 windows"
    assert out["tried"] == ["send", "light", "receive"] * 3
    # a lamp keeps its receiver on from TxDone until the answer would have ended
    assert out["lamp"][1][0] == "send" and out["lamp"][2] == ["continuous"]
    assert sum(out["listened"]) == 3000  # rx_window_ms: longer than the delay + the answer


def test_the_bench_and_the_gateway_stand_in_use_the_firmware_rx_timing(tmp_path: Path) -> None:
    need_micropython()
    from bench import node as bench
    from tests.firmware import node_peer

    out = run_link(
        tmp_path,
        """
from firmware.node import hw
print(json.dumps([loralink.RX_DELAY_MS, loralink.RX_ERROR_MS, loralink.RX_DETECT_SYMBOLS,
                  loralink.RX_MIN_SYMBOLS, hw.RANGER_PERIOD_MS,
                  [loralink.rx_window_ms(sf) for sf in range(7, 13)]]))
""",
    )
    assert out[:5] == [
        bench.RX_DELAY_MS,
        bench.RX_ERROR_MS,
        bench.RX_DETECT_SYMBOLS,
        bench.RX_MIN_SYMBOLS,
        bench.RANGER_PERIOD_MS,
    ]
    assert out[0] == node_peer.RX_DELAY_MS
    assert out[5] == [pytest.approx(bench.rx_window_ms(sf), abs=1) for sf in range(7, 13)]


def test_the_rtc_live_part_is_written_without_encoding_and_checked(tmp_path: Path) -> None:
    need_micropython()
    done = run_mpy(
        """
import json
from firmware.boards.sim import Board
import json as _json
from firmware.node import rtcstate
b = Board()
encodes = [0]
class Counting:
    loads = _json.loads
    def dumps(self, obj, **kw):
        encodes[0] += 1
        return _json.dumps(obj, **kw)
rtcstate.json = Counting()
state = {"pon": 5, "kind": {"v": [1, 2]}, "oseq": 7, "tries": 1, "boots": 9}
rtcstate.save(b, state)
after_save = encodes[0]
state["oseq"] = 8
state["tries"] = 2
state["led"] = b"\\x00\\x01\\x02"
state["kind"] = "changed, but only save() writes the body"
rtcstate.save_live(b, state)
kept = rtcstate.load(b)
kept["led"] = kept["led"].hex()
raw = bytearray(b.rtc_read())
raw[7] ^= 1  # a flipped bit in the live part
b.rtc_write(bytes(raw))
print(json.dumps({"kept": kept, "encodes": [after_save, encodes[0]],
                  "damaged": rtcstate.load(b)}))
""",
        tmp_path,
    )
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["encodes"] == [1, 1]  # save_live encoded nothing
    assert out["kept"] == {
        "pon": 5,
        "kind": {"v": [1, 2]},
        "oseq": 8,
        "tries": 2,
        "boots": 9,
        "led": "000102",
    }
    assert out["damaged"] == {}


RANGER = """
import json
from firmware.boards.sim import Board
from firmware.node import hw
b = Board()
naps = []
light = b.light_sleep_ms
def counting_light(ms):
    naps.append(ms)
    light(ms)
b.light_sleep_ms = counting_light
errors = []
cfg = {"pins": {"ranger_power": 25}, "kind_config": {}}
"""


def ranger_node(tmp: Path, range_mm: int = 640) -> None:
    need_micropython()
    sim = tmp / ".sim"
    sim.mkdir(parents=True, exist_ok=True)
    (sim / "board.json").write_text(json.dumps({"speed": 10, "epoch_s": EPOCH}))
    scenario = {"start": EPOCH, "signals": {"range_mm": range_mm}}
    (sim / "scenario.json").write_text(json.dumps(scenario))


def test_the_ranger_is_powered_paced_and_stops_once_its_readings_agree(tmp_path: Path) -> None:
    ranger_node(tmp_path)
    done = run_mpy(
        RANGER
        + """
sensors = hw.sensors(b, cfg, "binfill", errors, 5)
ranger = sensors["ranger"]
powered = b.outputs.get("pin:25")
readings = [ranger.read_mm() for _ in range(5)]
hw.release(sensors)
print(json.dumps({"readings": readings, "pings": ranger.pings, "powered": powered,
                  "off": b.outputs.get("pin:25"), "naps": naps, "errors": errors}))
""",
        tmp_path,
    )
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["errors"] == []
    assert out["powered"] == 1 and out["off"] == 0  # on while ranging, off after
    # three agreeing readings of five settle the median: the last two cost nothing
    assert out["readings"] == [640] * 5 and out["pings"] == 3
    # a warm-up light sleep, then one between frames (until 20 ms before the next is due)
    assert out["naps"][0] == 100
    assert len(out["naps"]) >= 3 and all(60 <= ms <= 80 for ms in out["naps"][1:])


@pytest.mark.parametrize(
    ("readings", "pings"),
    [
        ([640, 645, 650, 900, 100], 3),  # the first three agree: the median lies among them
        ([640, 700, 645, 650, 648], 5),  # the second is 60 mm off: all five
        ([640, None, 641, 642, 643], 5),  # an invalid reading: all five
        ([640, 652, 641, 642, 643], 5),  # 12 mm apart: all five
    ],
)
def test_the_early_stop_never_moves_the_median_more_than_stable_mm(
    tmp_path: Path, readings: list[int | None], pings: int
) -> None:
    need_micropython()
    done = run_mpy(
        f"""
import json
from firmware.node import hw
from firmware.kinds.binfill import median
class Fake:
    def __init__(self, values):
        self.values = values
    def read_mm(self):
        return self.values.pop(0)
class Board:
    def ticks_ms(self):
        return 0
class Uart:
    board = Board()
    last = None
values = {readings!r}
settled = hw._Settled(Fake(list(values)), 5, Uart())
got = [settled.read_mm() for _ in range(5)]
print(json.dumps({{"pings": settled.pings, "median": median(got), "full": median(values),
                  "stable": hw.STABLE_MM}}))
""",
        tmp_path,
    )
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["pings"] == pings
    assert abs(out["median"] - out["full"]) <= out["stable"]


AT_EXCHANGE = """
import sys
import firmware.node.send as send
_open = send.open_link
def _open_link(node):
    link = _open(node)
    print("AT_EXCHANGE", " ".join(sorted(sys.modules)))
    return link
send.open_link = _open_link
import firmware.node.app as app
app.main()
"""


def test_a_cycle_exchanges_without_the_modules_it_is_done_with(tmp_path: Path) -> None:
    """config, the kind's code, the schema, hw and the drivers are dropped before the link
    opens (RAM at the peak); the downlink that follows builds the kind again and applies."""
    need_micropython()
    keys = tmp_path / "keys"
    oscore = write_keys(keys, "leak-1")
    port = free_port()
    peer = Peer("coap", keys, port, tmp_path)
    try:
        node = SimNode(tmp_path / "node")
        cfg = {"node_id": "leak-1", "kind": "leak", "link": "coap", "oscore": oscore}
        node.config(cfg | {"coap": {"host": "127.0.0.1", "port": port}})
        node.board(speed=20, epoch_s=EPOCH)
        node.scenario({"start": EPOCH, "signals": {"pulse_rate:34": 0.01, "adc:35": 3000000}})
        node.cycles(1)
        peer.queue([{"type": "leak_config", "pulse_ml": 2000}])
        argv, env = node.command()
        node.command = lambda: ([argv[0], "-c", AT_EXCHANGE], env)  # type: ignore[method-assign]
        run = node.cycles(1)[0]
    finally:
        peer.stop()
    line = next(x for x in run.output.splitlines() if x.startswith("AT_EXCHANGE"))
    loaded = set(line.split()[1:])
    dropped = {
        "firmware.node.config",
        "firmware.node.cfgfile",
        "firmware.node.hw",
        "firmware.kinds",
        "firmware.kinds.leak",
        "protocol.schema",
        "firmware.drivers.pulse",
        "firmware.drivers.leakprobe",
    }
    assert not loaded & dropped, loaded & dropped
    assert "firmware.node.coaplink" in loaded and "firmware.node.loralink" not in loaded
    assert "firmware.node.mains" not in loaded  # no server on a battery node
    config = json.loads((node.folder / "config.json").read_text())
    assert config["kind_config"] == {"pulse_ml": 2000}
    assert "refused" not in run.output and "Error" not in run.output
