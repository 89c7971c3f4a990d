# Stand-ins for the ESP32 port's machine, esp32 and network modules (the parts the esp32 board
# uses, with the constants of the real port), so firmware/boards/esp32 runs on the unix port.
# MicroPython subset. install() puts them in sys.modules before the board is imported.
# esp32.ULP and machine.mem32 are backed by the ULP model (tests/firmware/ulp_model.py): `ulp`
# below is the coprocessor with its RTC slow memory, kept across install() calls as deep sleep
# keeps them; power_loss() starts a blank one.
import sys

from tests.firmware import ulp_model

calls = []  # type: list
ulp = ulp_model.ULP()


def power_loss():
    global ulp  # noqa: PLW0603 - the fakes' one coprocessor; a power loss blanks it
    ulp = ulp_model.ULP()
    RTC.mem = bytearray()


class _Module:
    pass


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2
    levels = {}  # type: dict  # noqa: RUF012 - MicroPython: no typing.ClassVar

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        calls.append(("Pin", id, mode, pull))
        pad = ulp_model.PADS.get(id)
        if pad is not None and mode != -1:
            # the port's Pin() takes an RTC pad back to the digital side (rtc_gpio_deinit)
            ulp.regs[pad[0]] = ulp.regs.get(pad[0], 0) & ~(1 << pad[1])

    def value(self, v=None):
        if v is None:
            return Pin.levels.get(self.id, 0)
        Pin.levels[self.id] = v
        return None

    def irq(self, handler=None, trigger=3):
        self.handler = handler


class ADC:
    ATTN_11DB = 3

    def __init__(self, pin, atten=0):
        calls.append(("ADC", pin.id, atten))


class PWM:
    def __init__(self, pin, freq=0, duty_u16=0):
        calls.append(("PWM", pin.id, freq, duty_u16))


class RTC:
    mem = bytearray()

    def memory(self, data=None):
        if data is None:
            return bytes(RTC.mem)
        if len(data) > 2048:
            raise ValueError("buffer too long")
        RTC.mem = bytearray(data)
        return None

    def datetime(self, t):
        calls.append(("datetime", t))


class WDT:
    def __init__(self, id=0, timeout=5000):
        calls.append(("WDT", timeout))

    def feed(self):
        pass


class PCNT:
    INCREMENT = 1
    count = 0

    def __init__(self, id, **kw):
        calls.append(("PCNT", id, kw.get("filter")))

    def start(self):
        pass

    def value(self):
        # a signed 16-bit register, as the hardware counts past 32767
        v = PCNT.count & 0xFFFF
        return v - 0x10000 if v >= 0x8000 else v


class ULP:
    # esp32.ULP: one coprocessor, whatever the number of ULP() objects
    def set_wakeup_period(self, index, period_us):
        calls.append(("ulp_period", index, period_us))
        ulp.set_wakeup_period(index, period_us)

    def load_binary(self, addr, binary):
        calls.append(("ulp_load", addr, len(binary)))
        ulp.load_binary(addr, binary)

    def run(self, entry):
        calls.append(("ulp_run", entry))
        ulp.run(entry)


class _Mem32:
    def __getitem__(self, addr):
        return ulp.read32(addr)

    def __setitem__(self, addr, value):
        ulp.write32(addr, value)


class SleepCalled(Exception):
    pass


def install(reset_cause=1, wake_reason=0, with_ulp=True):
    machine = _Module()
    machine.mem32 = _Mem32()
    machine.Pin = Pin
    machine.ADC = ADC
    machine.PWM = PWM
    machine.RTC = RTC
    machine.WDT = WDT
    machine.PWRON_RESET = 1
    machine.HARD_RESET = 2
    machine.WDT_RESET = 3
    machine.DEEPSLEEP_RESET = 4
    machine.SOFT_RESET = 5
    machine.EXT0_WAKE = 2
    machine.EXT1_WAKE = 3
    machine.TIMER_WAKE = 4
    machine.reset_cause = lambda: reset_cause
    machine.wake_reason = lambda: wake_reason
    machine.unique_id = lambda: b"\x24\x0a\xc4\x00\x00\x01"

    def deepsleep(ms):
        calls.append(("deepsleep", ms))
        raise SleepCalled()

    machine.deepsleep = deepsleep
    machine.reset = lambda: calls.append(("reset",))
    machine.lightsleep = lambda ms: calls.append(("lightsleep", ms))
    machine.freq = lambda hz: calls.append(("freq", hz))
    esp32 = _Module()
    esp32.PCNT = PCNT
    wake = {"ext0": None}

    def wake_on_ext0(pin, level):
        if wake.get("ulp"):
            raise ValueError("no resources")
        wake["ext0"] = pin.id
        calls.append(("ext0", pin.id, level))

    def wake_on_ulp(on):
        # the port's rule: no ULP wake-up next to an ext0 one
        if wake["ext0"] is not None:
            raise ValueError("no resources")
        wake["ulp"] = on
        calls.append(("wake_on_ulp", on))

    esp32.wake_on_ext0 = wake_on_ext0
    esp32.wake_on_ulp = wake_on_ulp
    esp32.wake_on_ext1 = lambda pins, level: calls.append(("ext1", [p.id for p in pins], level))
    esp32.WAKEUP_ALL_LOW = False
    esp32.WAKEUP_ANY_HIGH = True
    if with_ulp:
        esp32.ULP = ULP
    network = _Module()
    sys.modules["machine"] = machine
    sys.modules["esp32"] = esp32
    sys.modules["network"] = network
    for name in list(sys.modules):
        if name.startswith("firmware.boards.esp32"):
            del sys.modules[name]
