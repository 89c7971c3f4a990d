"""protocol/airtime.py, property test: a node that sends whenever the ledger allows never
exceeds the duty cycle in any one-hour window, however small the ledger's memory.

The check is brute force on the host: the on-air time inside every window [T - 1 h, T], for
every T where that total can peak (a frame's end, or a frame's start plus one hour).
"""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

WINDOW = 3600000
CHANNELS = {868100000: "M", 868500000: "M", 867100000: "L", 868950000: "N"}
BUDGET = {"M": 36000, "L": 36000, "N": 3600}

ATTEMPTS = st.lists(
    st.tuples(
        st.integers(0, 400000),  # ms since the previous attempt
        st.integers(1, 3000),  # airtime ms
        st.sampled_from(sorted(CHANNELS)),
    ),
    min_size=1,
    max_size=80,
)


def worst_window(frames):
    """Largest on-air time (ms) inside any one-hour window; frames are (start, end) in ms."""
    worst = 0
    candidates = {end for _, end in frames} | {start + WINDOW for start, _ in frames}
    for t in candidates:
        lo = t - WINDOW
        total = sum(max(0, min(end, t) - max(start, lo)) for start, end in frames)
        worst = max(worst, total)
    return worst


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(attempts=ATTEMPTS, max_entries=st.sampled_from([1, 2, 3, 16]))
def test_sending_whenever_allowed_respects_every_window(interp, attempts, max_entries):
    airtime = interp.module("protocol.airtime")
    ledger = airtime.DutyCycleLedger(max_entries=max_entries)
    exact = airtime.DutyCycleLedger(max_entries=255)
    now = 0
    sent = {"M": [], "L": [], "N": []}
    for gap, air, channel in attempts:
        now += gap
        allowed = ledger.can_send(channel, air, now / 1000)
        if allowed:
            ledger.record(channel, air, now / 1000)
            sent[CHANNELS[channel]].append((now, now + air))
        # a smaller memory may only be stricter than the exact ledger
        assert not allowed or exact.can_send(channel, air, now / 1000)
        if allowed:
            exact.record(channel, air, now / 1000)
        # after waiting what wait_s says, the frame is allowed
        wait = ledger.wait_s(channel, air, now / 1000)
        assert wait >= 0
        assert (wait == 0) == ledger.can_send(channel, air, now / 1000)
        assert ledger.can_send(channel, air, (now + round(wait * 1000)) / 1000)
    for band, frames in sent.items():
        assert worst_window(frames) <= BUDGET[band]
