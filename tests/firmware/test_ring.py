"""The flash ring buffer (firmware/node/ring.py) on the MicroPython unix port, sim board flash.

Power loss is real: the sim board's flash files stop after exactly N bytes and the process
SIGKILLs itself (board.json power_cut_after_bytes), or the test SIGKILLs a writer at a random
moment. Nothing the ring acknowledged (append returned) may be lost; a torn record is skipped.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.firmware.node_support import ROOT, need_micropython, run_mpy

SLOT = 64
# bytes 1..63 go first, the state byte (0xA5) last: a record is live only after all 64
BODY = 54  # header bytes 1..10 + payload(239) 40 + CRC 4: the body is whole after 54 bytes

OPEN = """
import json
from firmware.boards.sim import Board
from firmware.node.ring import Ring
board = Board()
ring = Ring(board, "ring.bin", {slots})
def payload(i):
    return bytes([i % 251]) * (1 + i % 40)
def dump():
    out = []
    for n in ring.pending(512):
        seq, taken, alarm, data = ring.read(n)
        out.append([seq, taken, alarm, data == payload(seq)])
    print(json.dumps({{"pending": out, "torn": ring.torn, "dropped": ring.dropped,
                      "len": len(ring), "alarms": ring.alarms(), "commits": ring.flash_commits,
                      "max_seq": ring.max_seq}}))
"""


def ring(tmp: Path, body: str, slots: int = 16, **kw: object) -> dict[str, object]:
    done = run_mpy(OPEN.format(slots=slots) + body, tmp, **kw)  # type: ignore[arg-type]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"returncode": done.returncode}


def test_records_survive_a_restart_and_drain_alarms_first(tmp_path: Path) -> None:
    ring(
        tmp_path,
        """
for i, alarm in enumerate([False, True, False, False, True]):
    ring.append(payload(i), i, 1000 + i, alarm)
""",
    )
    state = ring(tmp_path, "dump()")
    # alarms first, each group oldest first; every payload and taken time back intact
    assert state["pending"] == [
        [1, 1001, True, True],
        [4, 1004, True, True],
        [0, 1000, False, True],
        [2, 1002, False, True],
        [3, 1003, False, True],
    ]
    assert state["torn"] == 0
    assert state["alarms"] == 2
    assert (tmp_path / "ring.bin").stat().st_size == 16 * SLOT


def test_sent_records_are_freed_with_one_flash_commit(tmp_path: Path) -> None:
    ring(tmp_path, "for i in range(6): ring.append(payload(i), i, i, False)")
    state = ring(tmp_path, "c = ring.flash_commits; ring.mark_sent(ring.pending(3)); dump()")
    assert state["len"] == 3
    assert state["commits"] == 1  # three records freed, one commit
    again = ring(tmp_path, "dump()")
    assert [p[0] for p in again["pending"]] == [3, 4, 5]
    assert again["max_seq"] == 5  # a sent record still counts for the next seq


def test_a_full_ring_drops_the_oldest_routine_record_never_an_alarm(tmp_path: Path) -> None:
    state = ring(
        tmp_path,
        """
for i in range(3):
    ring.append(payload(i), i, i, True)
for i in range(3, 13):
    ring.append(payload(i), i, i, False)
dump()
""",
        slots=8,
    )
    assert [p[0] for p in state["pending"]] == [0, 1, 2, 8, 9, 10, 11, 12]
    assert state["dropped"] == 5


def test_a_ring_full_of_alarms_drops_the_oldest_alarm(tmp_path: Path) -> None:
    state = ring(
        tmp_path,
        "for i in range(10): ring.append(payload(i), i, i, True)\ndump()",
        slots=8,
    )
    assert [p[0] for p in state["pending"]] == [2, 3, 4, 5, 6, 7, 8, 9]


def test_a_record_too_big_for_a_slot_is_refused(tmp_path: Path) -> None:
    done = run_mpy(
        OPEN.format(slots=8)
        + """
try:
    ring.append(bytes(50), 1, 1)
except ValueError as e:
    print("refused", e)
ring.append(bytes(49), 2, 1)
print(len(ring))
""",
        tmp_path,
    )
    assert "refused ring: record of 50 bytes > 49" in done.stdout
    assert done.stdout.split()[-1] == "1"


SETUPS = {
    "empty-slot": "for i in range(3): ring.append(payload(i), i, i, i == 1)\n",
    # every slot has been used and sent: the new record overwrites a sent one in place
    "sent-slot": "for i in range(8): ring.append(payload(i), i, i, False)\n"
    "ring.mark_sent(ring.pending(8))\n"
    "for i in range(8, 11): ring.append(payload(i), i, i, i == 9)\n",
    # the ring is full: the new record evicts the oldest routine record (seq 0)
    "full-ring": "for i in range(8): ring.append(payload(i), i, i, i == 3)\n",
}


# every byte boundary of the slot would be 64 runs; these cover the state byte, header, length,
# payload, CRC, the last byte of the record and the padding, and keep it quick
CUTS = [0, 1, 4, 5, 10, 11, 30, 53, 54, 63, 64]
REOPEN = """
import json
from firmware.boards.sim import Board
from firmware.node.ring import Ring
def payload(i):
    return bytes([i % 251]) * (1 + i % 40)
def dump(ring):
    out = []
    for n in ring.pending(512):
        seq, taken, alarm, data = ring.read(n)
        out.append([seq, taken, alarm, data == payload(seq)])
    return {"pending": out, "torn": ring.torn, "max_seq": ring.max_seq}
for path in PATHS:
    ring = Ring(Board(path + "/.sim"), path + "/ring.bin", 8)
    first = dump(ring)
    ring.append(payload(240), 240, 9)
    print(json.dumps([first, dump(ring)]))
"""


def power_cuts(template: Path, tmp: Path) -> dict[int, list[dict[str, Any]]]:
    """For each cut: the ring state after the power went that many bytes into an append, and
    after one more append once power is back."""
    paths = []
    for cut in CUTS:
        folder = tmp / f"cut{cut}"
        shutil.copytree(template, folder)
        (folder / ".sim/board.json").write_text(json.dumps({"power_cut_after_bytes": cut}))
        done = run_mpy(
            OPEN.format(slots=8) + "ring.append(payload(239), 239, 7, False)\nprint('written')",
            folder,
            check=False,
        )
        # the slot is written whole (zero padded): the power goes even when the cut is past
        # BODY
        assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
        paths.append(str(folder))
    # one process brings them all back (a process start per cut would double the test's time)
    after = run_mpy(REOPEN.replace("PATHS", json.dumps(paths)), tmp)
    states = [json.loads(line) for line in after.stdout.splitlines() if line.startswith("[")]
    return dict(zip(CUTS, states, strict=True))


@pytest.mark.parametrize("case", list(SETUPS))
def test_a_power_cut_at_any_byte_of_a_record_loses_only_that_record(
    tmp_path: Path, case: str
) -> None:
    before = {"empty-slot": [0, 1, 2], "sent-slot": [8, 9, 10], "full-ring": list(range(8))}[case]
    template = tmp_path / "template"
    template.mkdir()
    ring(template, SETUPS[case], slots=8)
    for cut, (state, after) in power_cuts(template, tmp_path).items():
        seqs = sorted(p[0] for p in state["pending"])
        assert all(p[3] for p in state["pending"]), (cut, state)
        if cut == 0:
            assert seqs == before, (cut, state)
            assert state["torn"] == 0
        elif case == "full-ring":
            # the evicted record (seq 0) was given up; its slot holds the cut record, live
            # already (the old state byte) but whole only once its body is
            whole = cut >= BODY
            assert set(before[1:]) <= set(seqs), (cut, state)
            assert (239 in seqs) == whole, (cut, state)
            # the first bytes written may equal the old record's (flags 0, seq high bytes 0):
            # then it is still whole; from byte 5 (seq's low byte) on it is spoilt
            assert (0 in seqs) == (cut < 5), (cut, state)
            assert state["torn"] == (1 if 5 <= cut < BODY else 0), (cut, state)
        elif cut < SLOT:
            assert seqs == before, (cut, state)  # nothing new, nothing sent brought back
            assert state["torn"] == 0, (cut, state)
        else:
            assert seqs == [*before, 239]
            assert state["torn"] == 0
        # the ring goes on: the next record is stored and numbering does not go back
        assert 240 in [p[0] for p in after["pending"]]
        assert after["max_seq"] == 240


def test_sigkill_at_random_moments_never_loses_an_acknowledged_record(tmp_path: Path) -> None:
    """A writer appends and prints each seq once append returned; it is killed at random
    moments. Every printed seq must be in the ring afterwards."""
    import os

    rng = random.Random(7)
    acked: set[int] = set()
    next_seq = 0
    env = dict(os.environ, MICROPYPATH=f"{ROOT}:.frozen", SIM_STATE=str(tmp_path / ".sim"))
    (tmp_path / ".sim").mkdir()
    for _ in range(6):
        code = OPEN.format(slots=512) + (
            f"i = {next_seq}\n"
            "while i < 100000:\n"
            "    ring.append(payload(i), i, i, i % 7 == 0)\n"
            "    print(i)\n"
            "    i += 1\n"
        )
        proc = subprocess.Popen(
            [need_micropython(), "-c", code],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        # let it write for a while, then pull the plug in the middle of whatever it does
        target = rng.randint(20, 120)
        for line in proc.stdout:
            seq = int(line)
            acked.add(seq)
            if seq >= next_seq + target:
                break
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait()
        acked.update(int(x) for x in rest.split())
        state = ring(tmp_path, "dump()", slots=512)
        present = {p[0] for p in state["pending"]}  # type: ignore[union-attr]
        assert acked <= present, sorted(acked - present)
        assert all(p[3] for p in state["pending"])  # type: ignore[union-attr]
        assert state["torn"] <= 1
        next_seq = int(state["max_seq"]) + 1  # type: ignore[call-overload]
    assert len(acked) > 100
