"""OSCORE's mutable state: sender sequence numbers and the replay window (RFC 8613 §7, B.1.1).

Sender sequence numbers must never repeat under one key, across deep sleep and power loss.
`SenderSequence` follows Appendix B.1.1: before handing out numbers it reserves a block of
`step` of them in durable storage (flash), and it keeps the live value where it survives deep
sleep (RTC memory). After deep sleep it resumes from the live value; after power loss (RTC
memory gone) from the reservation, skipping the unused rest of the block. Flash is therefore
written once per `step` messages, not once per message.

The storage is injected so the firmware can back it with flash + RTC memory:

    store.load_reserved() -> int or None     # durable (flash); None: nothing stored yet
    store.save_reserved(value)               # durable; must be on flash when it returns
    store.load_live() -> int or None         # retained through deep sleep (RTC memory);
                                             # None when lost or invalid (power loss)
    store.save_live(value)

`MemorySequenceStore` is that interface in RAM, for tests, the simulator and the benchmark.
"""

MAX_SEQNO = (1 << 40) - 1  # RFC 8613 §7.2.1: the Partial IV is at most 5 bytes
DEFAULT_STEP = 64  # flash writes per 1,000 messages: 1000 / 64 -> 16


class SequenceExhausted(ValueError):
    """No sender sequence number is left in this context: it needs new key material."""


class SenderSequence:
    def __init__(self, store=None, step=DEFAULT_STEP):
        if step < 1:
            raise ValueError("the reservation step must be at least 1")
        self.store = store
        self.step = step
        self.flash_writes = 0
        if store is None:
            # RAM only: fine for a peer whose context lives exactly as long as the process
            self._next = 0
            self._reserved = MAX_SEQNO + 1
            return
        reserved = store.load_reserved()
        if reserved is None:
            reserved = 0
        live = store.load_live()
        if live is None or live < 0 or live > reserved:
            # Power loss: numbers below the reservation may have been sent; skip them all.
            live = reserved
        self._next = live
        self._reserved = reserved

    @property
    def value(self):
        """The number the next `next()` returns."""
        return self._next

    def next(self):
        n = self._next
        if n > MAX_SEQNO:
            raise SequenceExhausted("sender sequence numbers exhausted (2^40 used)")
        if n >= self._reserved:
            # Reserve before use: written to flash first, so a power cut right after this
            # leaves the reservation above every number that can have gone on the air.
            self._reserved = min(n + self.step, MAX_SEQNO + 1)
            self.store.save_reserved(self._reserved)
            self.flash_writes += 1
        self._next = n + 1
        if self.store is not None:
            self.store.save_live(self._next)
        return n


class MemorySequenceStore:
    """The storage interface in RAM; `power_loss()` forgets what RTC memory would."""

    def __init__(self, reserved=None, live=None):
        self.reserved = reserved
        self.live = live
        self.flash_writes = 0

    def load_reserved(self):
        return self.reserved

    def save_reserved(self, value):
        self.reserved = value
        self.flash_writes += 1

    def load_live(self):
        return self.live

    def save_live(self, value):
        self.live = value

    def power_loss(self):
        self.live = None


class ReplayWindow:
    """Anti-replay sliding window of 32 sequence numbers (RFC 8613 §7.4, RFC 6347 §4.1.2.6).

    `top` is the highest number accepted so far; bit `n % 32` of a 4-byte ring says whether
    number n (top - 31 <= n <= top) was seen. Numbers below the window are refused. No
    allocation per message: the ring is updated in place.
    """

    SIZE = 32

    def __init__(self):
        self.top = -1
        self._ring = bytearray(4)

    def _seen(self, n):
        i = n & 31
        return self._ring[i >> 3] >> (i & 7) & 1

    def is_fresh(self, n):
        if n > self.top:
            return True
        if self.top - n >= self.SIZE:
            return False
        return not self._seen(n)

    def mark(self, n):
        """Record n as received; call only after the message verified."""
        ring = self._ring
        if n > self.top:
            # Slide: the slots of top+1 .. n (at most 32 of them) now describe new numbers.
            first = max(self.top + 1, n - self.SIZE + 1)
            for m in range(first, n + 1):
                i = m & 31
                ring[i >> 3] &= ~(1 << (i & 7)) & 0xFF
            self.top = n
        i = n & 31
        ring[i >> 3] |= 1 << (i & 7)
