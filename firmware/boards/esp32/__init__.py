# The ESP32 board: the Board interface (firmware/boards/__init__.py) on the real modules. Kept
# thin: it cannot run in CI, so it is type-checked against micropython-esp32-stubs and compiled
# with mpy-cross -march=xtensawin; everything above it is tested on the sim board.

import struct
import time

import esp32
import machine
import network

from firmware.boards import PINS, RTC_USER_SIZE
from firmware.boards.esp32 import ulp

# time.time() counts from 2000-01-01 on ports built with the old epoch; the board speaks Unix time
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0

# The CPU clock: 160 MHz for Python work, 80 MHz while an awake wait of _SLOW_WAIT_MS or more
# lasts (shorter ones are not worth the two switches)
_FAST_HZ = 160000000
_SLOW_HZ = 80000000
_SLOW_WAIT_MS = 5

# ADC2 (GPIO 0, 2, 4, 12-15, 25-27) is shared with the WiFi radio and fails while WiFi is on
_ADC1_PINS = (32, 33, 34, 35, 36, 37, 38, 39)

_RESET_CAUSES = {
    machine.PWRON_RESET: "power_on",
    machine.HARD_RESET: "hard",
    machine.WDT_RESET: "watchdog",
    machine.DEEPSLEEP_RESET: "deep_sleep",
    machine.SOFT_RESET: "soft",
}

# The board's own 8 bytes at the end of RTC memory: a tag, the length of the user's bytes (u16
# LE: rtc_read gives back exactly what rtc_write got), the pulses counted before this boot's
# counter began (u32: the ULP's own count survives deep sleep, a PCNT's does not). Tag b"PE":
# the meter input was armed as the ext0 wake-up (no ULP), so a pin wake is one more pulse.
_TAG = b"PC"
_TAG_EXT0 = b"PE"
_TAIL = "<2sHI"


class Board:
    name = "esp32"
    IRQ_RISING = machine.Pin.IRQ_RISING
    IRQ_FALLING = machine.Pin.IRQ_FALLING

    def __init__(self):
        self.pins = dict(PINS)
        self._rtc = machine.RTC()
        self._wlan = None
        self._counter = None
        self._counter_pin = None  # the meter input when it wakes the CPU (no ULP)
        self._wake_pins = []  # (Pin, level) for an ext1 wake-up while the ULP counts
        self.flash_writes = 0
        # one buffer for every RTC memory write (2 KB: no fresh allocation per write)
        self._mem = bytearray(RTC_USER_SIZE + 8)
        mem = self._rtc.memory()
        self._pulse_base = 0
        self._user = 0
        tag = mem[RTC_USER_SIZE : RTC_USER_SIZE + 2] if len(mem) == RTC_USER_SIZE + 8 else b""
        if tag in (_TAG, _TAG_EXT0):
            _tag, user, self._pulse_base = struct.unpack_from(_TAIL, mem, RTC_USER_SIZE)
            if user <= RTC_USER_SIZE:
                self._user = user
                self._mem[:user] = mem[:user]
        woke = machine.wake_reason() == machine.EXT0_WAKE
        if tag == _TAG_EXT0 and woke and machine.reset_cause() == machine.DEEPSLEEP_RESET:
            # asleep, the meter input was the ext0 wake-up: this wake is one edge
            self._pulse_base += 1

    # -- time --------------------------------------------------------------------------------
    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def ticks_add(self, t, ms):
        return time.ticks_add(t, ms)

    def sleep_ms(self, ms):
        if ms < _SLOW_WAIT_MS:
            time.sleep_ms(ms)
            return
        # an awake wait (a UART frame, a sensor settling): the CPU idles at 80 MHz meanwhile,
        # 20-31 mA instead of 27-44 mA at 160 MHz (ESP32 datasheet, modem-sleep); the APB
        # clock, and so the UARTs' baud rates, stay at 80 MHz
        machine.freq(_SLOW_HZ)
        try:
            time.sleep_ms(ms)
        finally:
            machine.freq(_FAST_HZ)

    def sleep_us(self, us):
        time.sleep_us(us)

    def light_sleep_ms(self, ms):
        # the CPU stops (0.8 mA instead of 30-40 mA) while the radio transmits or listens;
        # ticks_ms keeps counting through it
        if ms > 0:
            machine.lightsleep(ms)

    def time(self):
        return int(time.time()) + _EPOCH_OFFSET

    def set_time(self, epoch_s):
        t = time.gmtime(epoch_s - _EPOCH_OFFSET)
        # RTC.datetime: (year, month, day, weekday, hours, minutes, seconds, subseconds)
        self._rtc.datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))

    def service(self):
        pass  # interrupts and timers are hardware here

    # -- identity, resets, sleep -------------------------------------------------------------
    def unique_id(self):
        return machine.unique_id()

    def reset_cause(self):
        return _RESET_CAUSES.get(machine.reset_cause(), "unknown")

    def wake_reason(self):
        reason = machine.wake_reason()
        if reason == machine.TIMER_WAKE:
            return "timer"
        if reason in (machine.EXT0_WAKE, machine.EXT1_WAKE):
            return "pin"
        return "none"

    def rtc_read(self):
        return bytes(memoryview(self._mem)[: self._user])

    def rtc_write(self, data):
        n = len(data)
        if n > RTC_USER_SIZE:
            raise ValueError("rtc memory: %d bytes" % n)
        self._mem[:n] = data
        self._user = n
        self._save_pulses()

    def _save_pulses(self, tag=_TAG):
        pulses = self._pulse_base
        counter = self._counter
        if counter is not None and not counter.kept:
            try:
                pulses += counter.value()
            except OSError:
                pass  # the count stays where the last save left it
        struct.pack_into(_TAIL, self._mem, RTC_USER_SIZE, tag, self._user, pulses & 0xFFFFFFFF)
        self._rtc.memory(self._mem)

    def wake_on_pin(self, pin, level):
        if isinstance(self._counter, ulp.Counter):
            # MicroPython refuses the ULP wake-up (which keeps the ULP's memory powered) next
            # to an ext0 one ("no resources"); ext1 with one pin wakes on either level
            self._wake_pins.append((machine.Pin(pin, machine.Pin.IN), level))
            return
        esp32.wake_on_ext0(machine.Pin(pin, machine.Pin.IN), bool(level))

    def deep_sleep(self, ms):
        if isinstance(self._counter, ulp.Counter):
            # the ULP counts on; its program never executes WAKE, so this wakes nothing
            esp32.wake_on_ulp(True)
            for pin, level in self._wake_pins:
                esp32.wake_on_ext1((pin,), esp32.WAKEUP_ANY_HIGH if level else esp32.WAKEUP_ALL_LOW)
        elif self._counter_pin is not None:
            # no ULP: the meter input wakes the CPU, on the edge opposite to its level now
            self._save_pulses(_TAG_EXT0)
            level = not self._counter_pin.value()
            esp32.wake_on_ext0(self._counter_pin, level)
        machine.deepsleep(ms)

    def reset(self):
        machine.reset()

    def watchdog(self, timeout_ms):
        return machine.WDT(timeout=timeout_ms)

    # -- flash -------------------------------------------------------------------------------
    def path(self, name):
        return "/" + name

    def open(self, name, mode="rb"):
        return open("/" + name, mode)

    # -- GPIO and buses ----------------------------------------------------------------------
    def pin(self, id, mode="in", pull=None, value=None):
        m = machine.Pin.OUT if mode == "out" else machine.Pin.IN
        p = -1
        if pull == "up":
            p = machine.Pin.PULL_UP
        elif pull == "down":
            p = machine.Pin.PULL_DOWN
        if p < 0:
            pin = machine.Pin(id, m)
        else:
            pin = machine.Pin(id, m, p)
        if value is not None:
            pin.value(value)
        return pin

    def adc(self, pin):
        if pin not in _ADC1_PINS:
            raise ValueError("adc: GPIO%d is not on ADC1 (ADC2 fails while WiFi is on)" % pin)
        return machine.ADC(machine.Pin(pin), atten=machine.ADC.ATTN_11DB)

    def pwm(self, pin, freq=1000, duty_u16=0):
        return machine.PWM(machine.Pin(pin), freq=freq, duty_u16=duty_u16)

    def i2c(self, bus=0, scl=22, sda=21, freq=400000):
        return machine.I2C(bus, scl=machine.Pin(scl), sda=machine.Pin(sda), freq=freq)

    def spi(self, bus=1, sck=5, mosi=27, miso=19, baudrate=8000000):
        return machine.SPI(
            bus,
            baudrate=baudrate,
            polarity=0,
            phase=0,
            sck=machine.Pin(sck),
            mosi=machine.Pin(mosi),
            miso=machine.Pin(miso),
        )

    def uart(self, bus, tx=17, rx=16, baudrate=9600, timeout_ms=0):
        return machine.UART(bus, baudrate=baudrate, tx=tx, rx=rx, timeout=timeout_ms)

    def time_pulse_us(self, pin, level, timeout_us=1000000):
        return machine.time_pulse_us(pin, level, timeout_us)

    def pulse_counter(self, pin):
        prog = ulp.program() if hasattr(esp32, "ULP") and pin in ulp.PADS else None
        if prog is not None:
            # no machine.Pin for this input from here on: MicroPython's Pin() takes an RTC pad
            # back to the digital side (rtc_gpio_deinit), and the ULP would read 0 from then on
            counter = self._counter = ulp.Counter(machine.mem32, prog, pin)
            # the program keeps running through deep sleep and a soft reset; after any other
            # reset it starts again, the count an intact earlier run had going into the base
            cold = self.reset_cause() not in ("deep_sleep", "soft")
            if cold or not counter.running():
                self._pulse_base += counter.start(esp32.ULP())
                self._save_pulses()
            return _Total(self)
        self._counter_pin = machine.Pin(pin, machine.Pin.IN)
        pcnt = getattr(esp32, "PCNT", None)
        if pcnt is not None:
            # 16-bit hardware counter; filter=1023 APB ticks drops glitches under 12.8 us (a reed
            # switch's millisecond bounce needs the meter's RC filter, as the driver's IRQ path
            # debounces in software instead)
            unit = pcnt(0, pin=self._counter_pin, rising=pcnt.INCREMENT, filter=1023)
            unit.start()
            self._counter = _PCNT(unit)
        else:
            self._counter = _IRQCounter(self._counter_pin)
        return _Total(self)

    # -- networks ----------------------------------------------------------------------------
    def wlan_connect(self, ssid, password, timeout_ms=10000):
        if self._wlan is None:
            # WLAN.IF_STA since MicroPython 1.24; network.STA_IF before
            sta = getattr(network.WLAN, "IF_STA", None)
            self._wlan = network.WLAN(network.STA_IF if sta is None else sta)
        wlan = self._wlan
        wlan.active(True)
        if wlan.isconnected():
            return True
        wlan.connect(ssid, password)
        start = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), start) < timeout_ms:
            if wlan.isconnected():
                return True
            time.sleep_ms(50)
        return False

    def wlan_rssi(self):
        if self._wlan is None or not self._wlan.isconnected():
            return None
        return self._wlan.status("rssi")

    def wlan_off(self):
        if self._wlan is not None:
            self._wlan.active(False)

    def udp(self, port=0):
        return _UDP(port)

    def lora(self, **settings):
        from firmware.drivers.sx127x import SX127x

        bus = self.pins["spi"]
        wiring = self.pins["lora"]
        spi = self.spi(bus["bus"], bus["sck"], bus["mosi"], bus["miso"])
        if "sleep_ms" not in settings:
            settings["sleep_ms"] = self.light_sleep_ms
        radio = SX127x(
            spi,
            machine.Pin(wiring["cs"], machine.Pin.OUT, value=1),
            reset=machine.Pin(wiring["reset"], machine.Pin.OUT, value=1),
            dio0=machine.Pin(wiring["dio0"], machine.Pin.IN),
            **settings,
        )
        radio.begin()
        return radio


class _PCNT:
    kept = False  # deep sleep stops it: the board saves its count in RTC memory

    def __init__(self, unit):
        self._unit = unit
        self._last = 0
        self._total = 0

    def value(self):
        # undo the 16-bit wrap; read often enough (a meter gives far fewer than 32767 edges/cycle)
        now = self._unit.value()
        self._total += (now - self._last) & 0xFFFF
        self._last = now
        return self._total


class _IRQCounter:
    kept = False

    def __init__(self, pin):
        self._count = 0
        pin.irq(handler=self._edge, trigger=machine.Pin.IRQ_RISING)

    def _edge(self, pin):
        self._count += 1

    def value(self):
        return self._count


class _Total:
    def __init__(self, board):
        self._board = board

    def value(self):
        b = self._board
        return b._pulse_base + (b._counter.value() if b._counter is not None else 0)

    def quiet_s(self):
        """Seconds since the last pulse, None where the counter cannot tell (no ULP)."""
        c = self._board._counter
        return c.quiet_s() if isinstance(c, ulp.Counter) else None

    def dry(self):
        """Zero-flow hours seen (wrapping at 16 bits), None where the counter cannot tell."""
        c = self._board._counter
        return c.dry() if isinstance(c, ulp.Counter) else None


class _UDP:
    def __init__(self, port):
        import select
        import socket

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if port:
            self._sock.bind(socket.getaddrinfo("0.0.0.0", port)[0][-1])
        self._poll = select.poll()
        self._poll.register(self._sock, select.POLLIN)
        self._addrs = {}

    def sendto(self, data, addr):
        import socket

        sa = self._addrs.get(addr)
        if sa is None:
            sa = self._addrs[addr] = socket.getaddrinfo(addr[0], addr[1])[0][-1]
        return self._sock.sendto(data, sa)

    def recv(self, timeout_ms):
        got = self.recvfrom(timeout_ms)
        return None if got is None else got[0]

    def recvfrom(self, timeout_ms):
        if not self._poll.poll(timeout_ms):
            return None
        return self._sock.recvfrom(1280)

    def close(self):
        self._sock.close()
