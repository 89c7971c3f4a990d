"""A node's life on the rig: flashed and provisioned from blank, deep-sleep continuity, a gateway
outage and the drain after it, a power loss in the middle of a flash write, and a boot loop
that ends in safe mode and is recovered with mpremote."""

from __future__ import annotations

from typing import Any

import pytest

from hil.gateway import reading_data, wait_until
from hil.rig import DUT, Rig, SimDUT
from tools.cli import main as city_node
from tools.node import NodeConnection

RESERVATION = 64  # the record counter's flash reservation step (firmware/node/app.py)


def leak_records(rig: Rig, node_id: str) -> list[dict[str, Any]]:
    return [reading_data(r) for r in rig.gateway.readings(node_id, "leak")]


def all_records(rig: Rig, node_id: str) -> list[dict[str, Any]]:
    return [reading_data(r) for r in rig.gateway.readings(node_id)]


# Offline cycles hurry: a gateway that does not answer costs RFC 7252's back-off (up to
# 45 s a cycle with the defaults); the scenarios here are about what happens after it.
QUICK_COAP = {"coap": {"ack_timeout_ms": 500, "max_retransmit": 2}}


def ready_leak_node(rig: Rig, node_id: str, **options: Any) -> DUT:
    dut = rig.dut(node_id, kind="leak")
    dut.provision("leak", **{"report_s": 60, "extra": QUICK_COAP, **options})
    return dut


def assert_no_duplicates(rig: Rig, node_id: str) -> None:
    ids = [r["id"] for r in rig.gateway.readings(node_id)]
    assert len(ids) == len(set(ids)), "a reading reached the upstream twice"


def test_flash_and_provision_a_blank_node(rig: Rig, capsys: pytest.CaptureFixture[str]) -> None:
    dut = rig.dut("leak-7", kind="leak", preflash=False)
    if rig.hardware:
        dut.flash_micropython()  # type: ignore[attr-defined]  # esptool, when rig.toml names one
    result = dut.flash()
    assert result.copied == len(rig.image().files)
    rig.gateway.start()
    outcome = dut.provision("leak", report_s=60, location="HIL bench, meter 7")
    assert outcome.kid == b"\x01"
    # the node restarted with its identity and reports through the gateway
    status = wait_until(
        lambda: [r for r in all_records(rig, "leak-7") if r["type"] == "status"],
        60,
        "the first status of the new node",
    )[0]
    assert status["firmware"] == rig.image().version
    assert status["boot_count"] >= 1
    wait_until(lambda: leak_records(rig, "leak-7"), 60, "the first leak reading")
    listing = rig.gateway.cli("node", "list").stdout
    assert "leak-7\tleak\tcoap\tHIL bench, meter 7\tleak-7" in listing
    capsys.readouterr()
    code = city_node(
        ["check", "--port", dut.port, "--wait", "70", "--gateway-config",
         str(rig.gateway.config_path)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "gateway      registered (leak, coap, kid 01), last seen" in out
    assert out.rstrip().endswith("ok")


def test_deep_sleep_continuity(rig: Rig, long_run: bool) -> None:
    cycles = 100 if long_run else (12 if not rig.hardware else 4)
    dut = ready_leak_node(rig, "leak-2")
    rig.gateway.start()
    dut.pulses(5)
    readings = rig.gateway.wait_readings(
        "leak-2",
        lambda rs: sum(r["kind"] == "leak" for r in rs) >= cycles,
        timeout=30 + cycles * (1.5 if not rig.hardware else 65),
        what=f"{cycles} readings",
    )
    records = [reading_data(r) for r in readings]
    # one record counter across every life, never reused: RTC memory and the flash
    # reservation carry it through each deep sleep
    seqs = [r["seq"] for r in records]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert_no_duplicates(rig, "leak-2")
    leaks = [r for r in records if r["type"] == "leak"]
    volumes = [r["volume_l"] for r in leaks]
    assert volumes == sorted(volumes)
    assert volumes[-1] == 5  # the pulses counted once, across the sleeps
    # each wake is a deep-sleep wake, not a reboot: the boot counter in RTC memory climbs
    # through them (statuses go out at start-up, and again only while an error waits to be
    # reported, e.g. the first exchanges before the gateway was up)
    statuses = [r for r in records if r["type"] == "status"]
    assert statuses
    assert all(s["reset_cause"] == "deep_sleep" for s in statuses[1:])
    counts = [s["boot_count"] for s in statuses]
    assert counts == sorted(set(counts))
    assert not [r for r in records[-cycles // 2 :] if r["type"] == "status"]
    if isinstance(dut, SimDUT):
        exits = dut.exits()
        assert exits.count("deep_sleep") >= cycles
        assert not {"watchdog", "crash", "power_loss"} & set(exits)
        info = dut.exit_info()
        assert info is not None and info["wake_epoch_ms"] - info["epoch_ms"] == 60_000


def test_gateway_outage_then_drain(rig: Rig) -> None:
    dut = ready_leak_node(rig, "leak-3")
    rig.gateway.start()
    rig.gateway.wait_readings("leak-3", lambda rs: len(rs) >= 2, 60, "readings before")
    rig.gateway.stop()
    mark = dut.console.mark()
    dut.pulses(7)
    dut.console.wait_for(r"node: link:", 60, since=mark)
    # a few cycles in the dark: the node keeps its readings in the flash ring
    wait_until(lambda: dut.console.count(r"node: boot", since=mark) >= 5, 90, "cycles offline")
    offline = dut.console.count(r"node: boot", since=mark)
    rig.gateway.start()
    readings = rig.gateway.wait_readings(
        "leak-3",
        lambda rs: (
            any(reading_data(r).get("volume_l") == 7 and r["data"]["age_s"] > 0 for r in rs)
            and len(rs) >= offline + 2
        ),
        90,
        "the drain",
    )
    records = [reading_data(r) for r in readings]
    seqs = [r["seq"] for r in records]
    # nothing lost, nothing twice: every record counter from the first to the last
    assert sorted(seqs) == list(range(min(seqs), max(seqs) + 1))
    assert_no_duplicates(rig, "leak-3")
    # buffered readings carry their age, and the drain is oldest first within each uplink
    aged = [r for r in records if r["age_s"] > 0]
    assert len(aged) >= 3
    assert max(r["age_s"] for r in aged) >= 120


@pytest.mark.sim_only("a power cut placed at a chosen byte of a flash write")
def test_power_loss_during_a_flash_write(rig: Rig) -> None:
    dut = ready_leak_node(rig, "leak-4")
    assert isinstance(dut, SimDUT)
    # no gateway yet: every reading goes to the flash ring
    dut.console.wait_for(r"node: link:", 60)
    wait_until(lambda: dut.lives() >= 5, 60, "readings buffered")
    mark = dut.console.mark()
    # the next flash write is cut after 20 of its bytes: in the middle of a ring record
    dut.power_cut_during_flash_write(20)
    wait_until(lambda: "power_loss" in dut.exits(), 60, "the power cut")
    dut.console.wait_for(r"node: boot 1 \(power_on\)", 30, since=mark)
    rig.gateway.start()
    wait_until(lambda: dut.lives() >= 12, 60, "more cycles")
    records = all_records(rig, "leak-4")
    assert_no_duplicates(rig, "leak-4")
    seqs = sorted(r["seq"] for r in records)
    # everything stored before the cut arrives, from the first record on: only the record
    # whose write was cut is gone (never acknowledged: the gateway was down)
    before = [s for s in seqs if s < RESERVATION]
    assert before == list(range(len(before)))
    assert len(before) >= 3
    # after a power loss the counter resumes at its flash reservation, never reusing a number
    # that may have gone out
    after = [s for s in seqs if s >= RESERVATION]
    assert after == list(range(RESERVATION, RESERVATION + len(after)))
    power_on = [r for r in records if r["type"] == "status" and r["seq"] >= RESERVATION]
    assert power_on and power_on[0]["reset_cause"] == "power_on"


def test_boot_loop_then_safe_mode_then_recovery_with_mpremote(rig: Rig) -> None:
    dut = ready_leak_node(rig, "leak-5")
    rig.gateway.start()
    rig.gateway.wait_readings("leak-5", lambda rs: len(rs) >= 2, 60, "a healthy node")
    # a broken module on the node: every boot crashes, the watchdog-free crash handler resets
    with dut.connect() as node:
        good = node.read_file("firmware/kinds/leak.mpy")
        assert good is not None
        node.write_file("firmware/kinds/leak.mpy", b"M\x06garbage")
        node.reset()
    dut.console.wait_for(r"node: SAFE MODE after 3 failed boots; REPL free", 120)
    # safe mode: status only, then the REPL, reachable by mpremote
    safe = wait_until(
        lambda: [r for r in all_records(rig, "leak-5") if r.get("reset_cause") == "panic"],
        60,
        "the status from safe mode",
    )
    assert safe
    with NodeConnection.open(dut.port, wait_s=10) as node:
        node.write_file("firmware/kinds/leak.mpy", good)
        mark = dut.console.mark()
        node.transport.exec_raw_no_follow(
            "import firmware.node.app as app\napp.leave_safe_mode()\n"
        )
    dut.console.wait_for(r"node: boot \d+ \(hard\), try 1", 60, since=mark)
    before = len(leak_records(rig, "leak-5"))
    wait_until(lambda: len(leak_records(rig, "leak-5")) >= before + 2, 60, "readings again")
    assert "SAFE MODE" not in dut.console.since(mark)


@pytest.mark.hardware("esptool writes MicroPython through an ESP32's ROM bootloader")
def test_esptool_writes_micropython_onto_the_chip(rig: Rig) -> None:
    dut = rig.dut()  # type: ignore[call-arg]  # the serial rig's one board
    dut.flash_micropython()  # type: ignore[attr-defined]
    with dut.connect(wait_s=20) as node:
        info = node.identify()
    assert info.platform == "esp32"
    assert info.version.startswith("1.")
    assert len(info.unique_id) == 12  # the MAC
