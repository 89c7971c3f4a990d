"""LoRa physics: time on air, the EU868 duty-cycle ledger, payload limits.

Runs on MicroPython (the node checks every LoRa transmission) and CPython (the gateway checks
every downlink). Sources: SX1276/77/78/79 datasheet §4.1.1.7 and Semtech AN1200.13 (time on
air), ETSI EN 300 220-2 V3.2.1 (sub-bands and duty cycles), LoRaWAN Regional Parameters
RP002-1.0.x EU863-870 (payload limits); summarised in ../shared/ref/NOTES.md §1-3.

    time_on_air_ms(payload_len, sf, bw_hz=125000, cr=1, preamble=8,
                   explicit_header=True, crc=True, ldro=None) -> float
    subband(channel, bw_hz=125000) -> "K" | "L" | "M" | "N" | "P" | "Q"
    budget_ms(name) -> ms of transmission allowed per hour in that sub-band
    max_payload(sf, bw_hz=125000) -> bytes
    DutyCycleLedger(max_entries=16): can_send / record / wait_s / used_ms / to_bytes / from_bytes

Times given to the ledger are seconds on the caller's clock (ints or floats; the ESP32's
single-precision floats cannot hold an epoch to the millisecond, so the node passes integers).
"""

import math
import struct

WINDOW_MS = 3600000  # ETSI observation period: one hour
MAX_PHY_PAYLOAD = 255  # SX127x payload length register
BW_MIN_HZ = 7800
BW_MAX_HZ = 500000

# EN 300 220-2 sub-bands for short-range devices around 868 MHz:
# (name, lowest Hz, highest Hz, allowed transmission ms per hour = duty cycle x 3600 s).
# The gaps between them (868.6-868.7, 869.2-869.4, 869.65-869.7 MHz) are alarm bands.
SUBBANDS = (
    ("K", 863000000, 865000000, 3600),  # 0.1 %
    ("L", 865000000, 868000000, 36000),  # 1 %
    ("M", 868000000, 868600000, 36000),  # 1 %: LoRaWAN 868.1/868.3/868.5 MHz
    ("N", 868700000, 869200000, 3600),  # 0.1 %
    ("P", 869400000, 869650000, 360000),  # 10 %: LoRaWAN RX2 869.525 MHz
    ("Q", 869700000, 870000000, 36000),  # 1 %
)


def _int_arg(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("%s: expected an integer %d..%d, got %r" % (name, lo, hi, value))
    if not lo <= value <= hi:
        raise ValueError("%s: %d out of range %d..%d" % (name, value, lo, hi))
    return value


def _flag_arg(name, value):
    # The formula's flags are 0/1; accept bools and those two integers.
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, int) and value in (0, 1):
        return value
    raise ValueError("%s: expected True/False, got %r" % (name, value))


def _bw_arg(bw_hz):
    if isinstance(bw_hz, bool) or not isinstance(bw_hz, (int, float)):
        raise ValueError("bw_hz: expected a number of Hz, got %r" % (bw_hz,))
    if not BW_MIN_HZ <= bw_hz <= BW_MAX_HZ:
        raise ValueError("bw_hz: %r out of range %d..%d" % (bw_hz, BW_MIN_HZ, BW_MAX_HZ))
    return bw_hz


def time_on_air_ms(  # noqa: PLR0917 - the positional signature issue 2 names
    payload_len, sf, bw_hz=125000, cr=1, preamble=8, explicit_header=True, crc=True, ldro=None
):
    """Time on air of one LoRa frame in milliseconds (SX127x datasheet formula)."""
    payload_len = _int_arg("payload_len", payload_len, 0, MAX_PHY_PAYLOAD)
    sf = _int_arg("sf", sf, 6, 12)
    bw_hz = _bw_arg(bw_hz)
    cr = _int_arg("cr", cr, 1, 4)
    preamble = _int_arg("preamble", preamble, 6, 65535)
    ih = 1 - _flag_arg("explicit_header", explicit_header)
    crc = _flag_arg("crc", crc)
    if sf == 6 and not ih:
        raise ValueError("explicit_header: SF6 works only with an implicit header on SX127x")
    if ldro is None:
        # Mandated when a symbol lasts 16 ms or more: 2^sf / bw >= 0.016 s.
        de = 1 if (1 << sf) * 1000 >= 16 * bw_hz else 0
    else:
        de = _flag_arg("ldro", ldro)
    num = 8 * payload_len - 4 * sf + 28 + 16 * crc - 20 * ih
    den = 4 * (sf - 2 * de)
    blocks = -(-num // den)  # ceil for a positive denominator
    n_payload = 8 + max(blocks, 0) * (cr + 4)
    # (preamble + 4.25 + n_payload) symbols of 2^sf / bw seconds, kept in quarter symbols so
    # that only the final division is inexact.
    quarter_symbols = 4 * preamble + 17 + 4 * n_payload
    return quarter_symbols * (1 << sf) * 1000 / (4 * bw_hz)


def max_payload(sf, bw_hz=125000):
    """Largest application payload in bytes at this data rate (EU868, RP002 table N)."""
    sf = _int_arg("sf", sf, 7, 12)
    if not isinstance(bw_hz, bool) and bw_hz == 250000:
        if sf != 7:
            raise ValueError("sf: EU868 uses 250 kHz only at SF7 (DR6)")
        return 222
    if isinstance(bw_hz, bool) or bw_hz != 125000:
        raise ValueError("bw_hz: EU868 data rates use 125000 or 250000 Hz, got %r" % (bw_hz,))
    if sf >= 10:
        return 51
    if sf == 9:
        return 115
    return 222


def subband(channel, bw_hz=125000):
    """The EN 300 220-2 sub-band a channel (centre Hz) lies in, whole bandwidth included.

    A sub-band name ("M") is accepted as is, so callers may pass either.
    """
    if isinstance(channel, str):
        for band in SUBBANDS:
            if band[0] == channel:
                return channel
        raise ValueError("channel: unknown sub-band %r" % (channel,))
    if isinstance(channel, bool) or not isinstance(channel, (int, float)):
        raise ValueError("channel: expected a frequency in Hz, got %r" % (channel,))
    half = _bw_arg(bw_hz) / 2
    for band in SUBBANDS:
        if band[1] <= channel - half and channel + half <= band[2]:
            return band[0]
    raise ValueError("channel: %r Hz (bw %r) is not inside one EU868 sub-band" % (channel, bw_hz))


def budget_ms(name):
    """Transmission time allowed per hour in a sub-band, in ms."""
    for band in SUBBANDS:
        if band[0] == name:
            return band[3]
    raise ValueError("channel: unknown sub-band %r" % (name,))


def _now_ms(now_s):
    if isinstance(now_s, bool) or not isinstance(now_s, (int, float)):
        raise ValueError("now_s: expected seconds as a number, got %r" % (now_s,))
    if isinstance(now_s, int):
        return now_s * 1000
    return math.floor(now_s * 1000 + 0.5)


def _airtime_arg(airtime_ms):
    if isinstance(airtime_ms, bool) or not isinstance(airtime_ms, (int, float)):
        raise ValueError("airtime_ms: expected a number of ms, got %r" % (airtime_ms,))
    if not airtime_ms > 0:
        raise ValueError("airtime_ms: must be positive, got %r" % (airtime_ms,))
    # Whole ms, rounded up: the ledger may overestimate, never underestimate.
    return airtime_ms if isinstance(airtime_ms, int) else math.ceil(airtime_ms)


_ENTRY = ">qI"  # end of transmission (ms on the caller's clock), airtime (ms)
_ENTRY_SIZE = 12


class DutyCycleLedger:
    """Transmissions of the last hour per EU868 sub-band, in bounded memory.

    A transmission recorded at `now_s` (when it starts) lasting `airtime_ms` ends at now + airtime
    and counts against its sub-band until one hour after that end. A new transmission may start
    when it, plus everything that ended less than an hour before the new one would end, stays
    within the sub-band's budget: every one-hour window then holds at most the budget.

    Memory: at most `max_entries` per sub-band. When one more is recorded, the two entries that
    ended closest together merge into one (the later end, the summed airtime): the merged
    airtime counts as long as the later entry would have, so the ledger can only overestimate
    use, never under. A node sending a few frames an hour stays exact.

    `now_s` is the caller's current time and must not run backwards between calls. If it does
    (the clock was stepped back), entries that would start in the future are moved to start
    now, so a clock step blocks a sub-band for one hour at most. Queries (`can_send`, `wait_s`,
    `used_ms`) forget nothing; `record` drops what has aged out.
    """

    def __init__(self, max_entries=16):
        self._max = _int_arg("max_entries", max_entries, 1, 255)
        self._bands = {}  # sub-band name -> list of [end_ms, airtime_ms], ordered by end

    def can_send(self, channel, airtime_ms, now_s, bw_hz=125000):
        """Whether a transmission of `airtime_ms` may start at `now_s` on `channel`."""
        name = subband(channel, bw_hz)
        air = _airtime_arg(airtime_ms)
        now = _now_ms(now_s)
        return air + self._counted(name, now, now + air) <= budget_ms(name)

    def record(self, channel, airtime_ms, now_s, bw_hz=125000):
        """Note a transmission of `airtime_ms` that started at `now_s` on `channel`."""
        name = subband(channel, bw_hz)
        air = _airtime_arg(airtime_ms)
        now = _now_ms(now_s)
        entries = self._live(name, now)
        entry = [now + air, air]
        i = len(entries)
        while i > 0 and entries[i - 1][0] > entry[0]:
            i -= 1
        entries.insert(i, entry)
        if len(entries) > self._max:
            _merge_closest(entries)
        self._bands[name] = entries

    def wait_s(self, channel, airtime_ms, now_s, bw_hz=125000):
        """Seconds from `now_s` until a transmission of `airtime_ms` may start (0.0 if now).

        ValueError if the transmission is longer than the sub-band's hourly budget.
        """
        name = subband(channel, bw_hz)
        air = _airtime_arg(airtime_ms)
        now = _now_ms(now_s)
        budget = budget_ms(name)
        if air > budget:
            raise ValueError(
                "airtime_ms: %d ms exceeds sub-band %s's %d ms per hour" % (air, name, budget)
            )
        horizon = now + air - WINDOW_MS
        total = air
        counted = []
        for end, used in self._live(name, now):
            if end > horizon:
                counted.append((end, used))
                total += used
        if total <= budget:
            return 0.0
        # Let the oldest entries age out until the rest fits; the last one to go sets the wait.
        for end, used in counted:
            total -= used
            if total <= budget:
                return (end + WINDOW_MS - air - now) / 1000
        return 0.0  # not reached: with every entry gone, total = air <= budget

    def used_ms(self, channel, now_s, bw_hz=125000):
        """Airtime counted against the sub-band in the hour ending at `now_s`."""
        name = subband(channel, bw_hz)
        now = _now_ms(now_s)
        return self._counted(name, now, now)

    def to_bytes(self):
        """Compact state for RTC memory or flash across deep sleep: 2 + 12 bytes per entry."""
        out = bytearray()
        for index in range(len(SUBBANDS)):
            entries = self._bands.get(SUBBANDS[index][0])
            if entries:
                out += struct.pack(">BB", index, len(entries))
                for end, used in entries:
                    out += struct.pack(_ENTRY, end, used)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data, max_entries=16):
        """A ledger restored from `to_bytes()`; ValueError on damaged data."""
        ledger = cls(max_entries)
        data = bytes(data)
        pos = 0
        while pos < len(data):
            if pos + 2 > len(data):
                raise ValueError("data: truncated ledger state")
            index, count = struct.unpack(">BB", data[pos : pos + 2])
            pos += 2
            if index >= len(SUBBANDS) or count == 0 or pos + count * _ENTRY_SIZE > len(data):
                raise ValueError("data: damaged ledger state")
            entries = []  # type: list
            for _ in range(count):
                end, used = struct.unpack(_ENTRY, data[pos : pos + _ENTRY_SIZE])
                pos += _ENTRY_SIZE
                if entries and end < entries[-1][0]:
                    raise ValueError("data: ledger entries out of order")
                entries.append([end, used])
            while len(entries) > ledger._max:
                _merge_closest(entries)
            ledger._bands[SUBBANDS[index][0]] = entries
        return ledger

    # -- internals --------------------------------------------------------------------------

    def _live(self, name, now):
        # A copy of the entries still inside the window at `now`. Only record() stores it, so a
        # query about a later time forgets nothing. An entry that would start after `now` means
        # the clock stepped back: it moves to start now, and that is kept.
        stored = self._bands.get(name, ())
        stepped = False
        for entry in stored:
            if entry[0] - entry[1] > now:
                entry[0] = now + entry[1]
                stepped = True
        if stepped:
            stored.sort()  # equal ends are interchangeable, so an unstable sort is fine
        entries = []
        for end, used in stored:
            if end + WINDOW_MS > now:
                entries.append([end, used])
        return entries

    def _counted(self, name, now, until):
        # Airtime of entries that ended less than an hour before `until`.
        horizon = until - WINDOW_MS
        total = 0
        for end, used in self._live(name, now):
            if end > horizon:
                total += used
        return total


def _merge_closest(entries):
    # Merge the adjacent pair with the smallest gap between their ends into the later one.
    best = 1
    for i in range(2, len(entries)):
        if entries[i][0] - entries[i - 1][0] < entries[best][0] - entries[best - 1][0]:
            best = i
    entries[best][1] += entries[best - 1][1]
    del entries[best - 1]
