"""The ULP model's decoder held against the assembler's encoder (esp32_ulp/opcodes.py, which
follows the ESP32 TRM's ULP instruction layouts): each instruction form the pulse counter uses
is assembled by esp32_ulp and decoded by tests/firmware/ulp_model.py, fields compared; what
the model does not model is refused rather than guessed."""

from __future__ import annotations

import pytest

from tests.firmware import ulp_model as m
from tools import ulp


def words(source: str) -> list[int]:
    program = ulp.assemble(".text\n" + source + "\n")
    return program.words


@pytest.mark.parametrize(
    ("source", "decoded"),
    [
        ("add r1, r2, r3", ("alu", m.ADD, 1, 2, "r", 3)),
        ("sub r0, r3, 0x1234", ("alu", m.SUB, 0, 3, "i", 0x1234)),
        ("and r2, r0, 1", ("alu", m.AND, 2, 0, "i", 1)),
        ("or r3, r1, r2", ("alu", m.OR, 3, 1, "r", 2)),
        ("move r2, 7", ("alu", m.MOVE, 2, 0, "i", 7)),
        ("move r1, r3", ("alu", m.MOVE, 1, 3, "r", 3)),  # treg = sreg, as binutils does
        ("lsh r1, r1, 4", ("alu", m.LSH, 1, 1, "i", 4)),
        ("rsh r0, r0, r1", ("alu", m.RSH, 0, 0, "r", 1)),
        ("ld r1, r2, 8", ("ld", 1, 2, 2)),  # offsets are written in bytes, encoded in words
        ("st r3, r1, 4", ("st", 3, 1, 1)),
        ("jump 8", ("jump", 0, 0, 0, 2)),
        ("jump 12, eq", ("jump", 1, 0, 0, 3)),
        ("jump 0, ov", ("jump", 2, 0, 0, 0)),
        ("jump r2", ("jump", 0, 1, 2, 0)),
        ("jumpr 8, 5, ge", ("jumpr", 1, 5, 2)),
        ("jumpr -4, 5, lt", ("jumpr", 0, 5, -1)),
        ("jumpr 8, 1, gt", ("jumpr", 1, 2, 2)),  # GT is GE threshold + 1
        ("reg_rd 0x3ff48424, 29, 14", ("reg_rd", m.RTC_GPIO_IN_REG, 29, 14)),
        ("halt", ("halt",)),
    ],
)
def test_the_decoder_reads_each_form_as_the_assembler_wrote_it(
    source: str, decoded: tuple[object, ...]
) -> None:
    assert [m.decode(w) for w in words(source)] == [decoded]


@pytest.mark.parametrize(
    "source", ["wake", "reg_wr 0x3ff48424, 7, 0, 1", "stage_inc 1", "jumps 4, 1, lt", "wait 10"]
)
def test_what_the_model_does_not_model_is_refused(source: str) -> None:
    with pytest.raises(m.ModelError):
        m.decode(words(source)[0])


def run(source: str) -> tuple[m.ULP, int]:
    """The program run once; the model and the word address of its `out` label."""
    prog = ulp.assemble(source)
    u = m.ULP()
    u.load_binary(0, prog.binary)
    u.run(prog.symbols["entry"] * 4)
    u.wake()
    return u, prog.symbols.get("out", -1)


DATA = ".data\n.global out\nout: .long 0\n.text\n.global entry\nentry:\n"


def test_alu_flags_as_the_instruction_set_page_gives_them() -> None:
    # ADD's overflow is the carry out of 16 bits; the result keeps the low 16 bits
    carry = (
        DATA
        + "move r0, 0xffff\nadd r0, r0, 2\njump c, ov\nhalt\nc: move r3, out\nst r0, r3, 0\nhalt"
    )
    u, out = run(carry)
    assert u.word(out) == 1
    # SUB's overflow is the borrow (ESP-IDF's ulp_adc example: "sub; jump wake_up, ov" for <)
    borrow = (
        DATA + "move r0, 3\nsub r0, r0, 4\njump b, ov\nhalt\nb: move r3, out\nst r0, r3, 0\nhalt"
    )
    u, out = run(borrow)
    assert u.word(out) == 0xFFFF
    # a JUMP on a flag not set by the instruction just before is a question the model refuses
    stale = DATA + "move r0, 0\nmove r3, out\nld r1, r3, 0\njump x, eq\nx: halt"
    with pytest.raises(m.ModelError, match="not right after an ALU op"):
        run(stale)
    with pytest.raises(m.ModelError, match="OV after and"):
        run(DATA + "and r0, r0, 0\njump x, ov\nx: halt")


def test_st_writes_the_pc_into_the_upper_half_and_ld_reads_the_lower() -> None:
    src = DATA + "move r3, out\nmove r1, 0x1234\nst r1, r3, 0\nld r2, r3, 0\nst r2, r3, 0\nhalt"
    u, out = run(src)
    # {PC[10:0], 3'b0, Rdst, Rsrc}: the second ST is at word 4, Rdst is r3
    assert u.mem[out] == (4 << 21) | (3 << 16) | 0x1234


def test_a_program_that_never_halts_is_an_error_not_a_hang() -> None:
    with pytest.raises(m.ModelError, match="no HALT"):
        run(".text\n.global entry\nentry: jump entry")
