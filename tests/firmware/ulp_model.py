# An instruction-level model of the ESP32 ULP FSM coprocessor, for the instructions the leak
# node's pulse counter uses (firmware/boards/esp32/ulp_pulse.S), so its binary runs in tests.
# Shared subset: CPython runs it in tests/firmware/test_ulp_*.py, MicroPython in the esp32 fakes
# (esp32.ULP and machine.mem32 are backed by it).
#
# It decodes the binary's 32-bit words by the field layout of the ESP32 Technical Reference
# Manual's ULP chapter (the same layout esp32_ulp/opcodes.py encodes; test_ulp_model.py holds
# the two against each other) and executes them as ESP-IDF's "ULP coprocessor instruction set"
# page describes:
#   ALU (ADD SUB AND OR MOVE LSH RSH; register or 16-bit immediate operand): 16-bit result; the
#     zero flag from every ALU result; the overflow flag from ADD (carry out of bit 15) and SUB
#     (borrow). A conditional JUMP is accepted only right after the ALU operation that set the
#     flag it tests (ADD/SUB for OV): what flags do across other instructions is not modelled.
#   ST  Mem[Rdst + offset] = {PC[10:0], 3'b0, Rdst, Rsrc}   LD  Rdst = Mem[Rsrc + offset][15:0]
#   JUMP (immediate or register target, unconditional / EQ / OV), JUMPR (R0 against a 16-bit
#   threshold, LT / GE), REG_RD (R0 = REG[addr][high:low], at most 16 bits), HALT.
# Anything else (WAKE, REG_WR, stage counter, ADC, I2C, WAIT...) raises ModelError: the counter
# has no business there, and a WAKE would wake the chip on every run.
#
# Peripheral side: RTC_GPIO_IN_REG shows a pad's level at bit 14 + its RTC GPIO number only
# while the pad is routed to the RTC domain (its MUX_SEL bit) with its input enabled (FUN_IE),
# as the main CPU must set them up (ESP32 TRM, RTC IO MUX; rtc_io_reg.h). Modelled for the
# input-only pads GPIO34-39.

RTC_SLOW_MEM = 0x50000000
RTC_SLOW_WORDS = 2048  # 8 KB
RTCCNTL_BASE = 0x3FF48000  # REG_RD's periph_sel 0..3 picks 0x400-byte blocks from here
RTCIO_BASE = 0x3FF48400
RTC_GPIO_IN_REG = RTCIO_BASE + 0x24
SENSOR_PADS_REG = RTCIO_BASE + 0x7C
ADC_PAD_REG = RTCIO_BASE + 0x80
# GPIO -> (pad register, MUX_SEL bit, FUN_IE bit, RTC GPIO number)
PADS = {
    36: (SENSOR_PADS_REG, 27, 19, 0),
    37: (SENSOR_PADS_REG, 26, 14, 1),
    38: (SENSOR_PADS_REG, 25, 9, 2),
    39: (SENSOR_PADS_REG, 24, 4, 3),
    34: (ADC_PAD_REG, 29, 23, 4),
    35: (ADC_PAD_REG, 28, 18, 5),
}
ULP_MAGIC = 0x00706C75
MAX_STEPS = 10000  # per run: a program that never HALTs is a bug, not a hang

ADD, SUB, AND, OR, MOVE, LSH, RSH = 0, 1, 2, 3, 4, 5, 6
ALU_NAMES = ("add", "sub", "and", "or", "move", "lsh", "rsh")


class ModelError(Exception):
    pass


def field(word, pos, width):
    return (word >> pos) & ((1 << width) - 1)


def decode(word):
    """One instruction word -> a tuple naming it and its fields (ModelError if not modelled)."""
    op = field(word, 28, 4)
    if op == 7:  # ALU
        sub = field(word, 25, 3)
        sel = field(word, 21, 4)
        if sel > RSH or sub > 1:
            raise ModelError(f"ALU sub-opcode {sub} sel {sel} not modelled: {word:08x}")
        if sub == 0:  # register operand: dreg 1:0, sreg 3:2, treg 5:4
            return ("alu", sel, field(word, 0, 2), field(word, 2, 2), "r", field(word, 4, 2))
        # immediate: dreg 1:0, sreg 3:2, imm 19:4
        return ("alu", sel, field(word, 0, 2), field(word, 2, 2), "i", field(word, 4, 16))
    if op == 8:  # branches
        sub = field(word, 25, 3)
        if sub == 0:  # JUMP: dreg 1:0, addr 12:2, reg 21, type 24:22
            kind = field(word, 22, 3)
            if kind > 2:
                raise ModelError(f"JUMP type {kind}: {word:08x}")
            return ("jump", kind, field(word, 21, 1), field(word, 0, 2), field(word, 2, 11))
        if sub == 1:  # JUMPR: imm 15:0, cmp 16, offset 23:17, sign 24
            step = field(word, 17, 7)
            return (
                "jumpr",
                field(word, 16, 1),
                field(word, 0, 16),
                -step if word >> 24 & 1 else step,
            )
        raise ModelError(f"branch sub-opcode {sub} (JUMPS) not modelled: {word:08x}")
    if op == 6:  # ST: sreg 1:0, dreg 3:2, offset 20:10, sub-opcode 27:25 = 4
        if field(word, 25, 3) != 4:
            raise ModelError(f"ST sub-opcode: {word:08x}")
        return ("st", field(word, 0, 2), field(word, 2, 2), field(word, 10, 11))
    if op == 13:  # LD: dreg 1:0, sreg 3:2, offset 20:10
        return ("ld", field(word, 0, 2), field(word, 2, 2), field(word, 10, 11))
    if op == 2:  # REG_RD: addr 7:0, periph_sel 9:8, low 22:18, high 27:23
        addr = RTCCNTL_BASE + field(word, 8, 2) * 0x400 + field(word, 0, 8) * 4
        return ("reg_rd", addr, field(word, 23, 5), field(word, 18, 5))
    if op == 11:
        return ("halt",)
    raise ModelError(f"opcode {op} not modelled: {word:08x}")


class ULP:
    def __init__(self):
        self.mem = [0] * RTC_SLOW_WORDS
        self.regs = {}  # RTC peripheral registers the main CPU wrote (address -> value)
        self.levels = {}  # GPIO -> input level at the pad
        self.period_us = {}  # ULP timer period registers (index -> us)
        self.entry = None  # PC_INIT in words; None: not started
        self.runs = 0
        self.steps = 0

    # -- the esp32.ULP interface (MicroPython's esp32 module) -----------------------------------
    def set_wakeup_period(self, index, period_us):
        self.period_us[index] = period_us

    def load_binary(self, load_addr, binary):
        magic = int.from_bytes(binary[0:4], "little")
        offset = int.from_bytes(binary[4:6], "little")
        text = int.from_bytes(binary[6:8], "little")
        data = int.from_bytes(binary[8:10], "little")
        bss = int.from_bytes(binary[10:12], "little")
        if magic != ULP_MAGIC or len(binary) != offset + text + data:
            raise ValueError("ulp: not a ULP binary")
        body = binary[offset:]
        for i in range(0, text + data, 4):
            self.mem[load_addr + i // 4] = int.from_bytes(body[i : i + 4], "little")
        for i in range((text + data) // 4, (text + data + bss) // 4):
            self.mem[load_addr + i] = 0

    def run(self, entry_bytes):
        # MicroPython's ULP.run() takes the entry in bytes and passes words to ulp_run()
        self.entry = entry_bytes // 4

    # -- the main CPU's view: machine.mem32 ------------------------------------------------------
    def read32(self, addr):
        if RTC_SLOW_MEM <= addr < RTC_SLOW_MEM + 4 * RTC_SLOW_WORDS:
            return self.mem[(addr - RTC_SLOW_MEM) // 4]
        if addr == RTC_GPIO_IN_REG:
            return self.gpio_in()
        return self.regs.get(addr, 0)

    def write32(self, addr, value):
        value &= 0xFFFFFFFF
        if RTC_SLOW_MEM <= addr < RTC_SLOW_MEM + 4 * RTC_SLOW_WORDS:
            self.mem[(addr - RTC_SLOW_MEM) // 4] = value
        else:
            self.regs[addr] = value

    def gpio_in(self):
        bits = 0
        for gpio in self.levels:
            pad = PADS.get(gpio)
            if pad is None or not self.levels[gpio]:
                continue
            reg = self.regs.get(pad[0], 0)
            if reg >> pad[1] & 1 and reg >> pad[2] & 1:
                bits |= 1 << (14 + pad[3])
        return bits

    # -- the coprocessor -------------------------------------------------------------------------
    def wake(self):
        """One start by the ULP timer: run from PC_INIT until HALT."""
        if self.entry is None:
            raise ModelError("ulp: timer start before run()")
        self.runs += 1
        r = [0, 0, 0, 0]
        pc = self.entry
        flags = None  # (sel of the ALU op just executed, zero, overflow); None: stale
        for _ in range(MAX_STEPS):
            ins = decode(self.mem[pc])
            self.steps += 1
            kind = ins[0]
            nxt = pc + 1
            fresh = None
            if kind == "alu":
                sel, d, s = ins[1], ins[2], ins[3]
                b = r[ins[5]] if ins[4] == "r" else ins[5]
                a = r[s]
                over = False
                if sel == ADD:
                    v = a + b
                    over = v > 0xFFFF
                elif sel == SUB:
                    v = a - b
                    over = v < 0
                elif sel == AND:
                    v = a & b
                elif sel == OR:
                    v = a | b
                elif sel == MOVE:
                    v = b
                elif b > 15:
                    raise ModelError(f"shift by {b}: undefined on the ULP")
                elif sel == LSH:
                    v = a << b
                else:
                    v = a >> b
                v &= 0xFFFF
                r[d] = v
                fresh = (sel, v == 0, over)
            elif kind == "jump":
                cond, by_reg = ins[1], ins[2]
                target = r[ins[3]] if by_reg else ins[4]
                take = cond == 0
                if cond:
                    if flags is None:
                        raise ModelError(f"pc {pc}: conditional JUMP not right after an ALU op")
                    if cond == 2 and flags[0] not in (ADD, SUB):
                        raise ModelError(f"pc {pc}: JUMP OV after {ALU_NAMES[flags[0]]}")
                    take = flags[1] if cond == 1 else flags[2]
                if take:
                    nxt = target
            elif kind == "jumpr":
                take = r[0] >= ins[2] if ins[1] else r[0] < ins[2]
                if take:
                    nxt = pc + ins[3]
            elif kind == "st":
                addr = r[ins[2]] + ins[3]
                self.mem[addr] = (pc & 0x7FF) << 21 | ins[2] << 16 | r[ins[1]]
            elif kind == "ld":
                r[ins[1]] = self.mem[r[ins[2]] + ins[3]] & 0xFFFF
            elif kind == "reg_rd":
                high, low = ins[2], ins[3]
                if high < low or high - low >= 16:
                    raise ModelError(f"REG_RD bits {high}:{low}: at most 16")
                r[0] = (self.read32(ins[1]) >> low) & ((1 << (high - low + 1)) - 1)
            else:  # halt
                return
            flags = fresh
            if not 0 <= nxt < RTC_SLOW_WORDS:
                raise ModelError(f"pc {pc}: jump out of RTC slow memory ({nxt})")
            pc = nxt
        raise ModelError(f"ulp: no HALT within {MAX_STEPS} instructions")

    def sample(self, gpio, levels):
        """One timer start per level in `levels`, the pad at that level meanwhile."""
        for level in levels:
            self.levels[gpio] = level
            self.wake()

    def word(self, addr):
        """A data word as the main CPU should read it: the ULP's 16 bits."""
        return self.mem[addr] & 0xFFFF
