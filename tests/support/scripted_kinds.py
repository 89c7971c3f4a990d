# Runs a whole script of wakes through a kind inside MicroPython, so a property test costs one
# bridge round trip per example rather than one per wake.


def drive(kind, steps):
    """steps: [(inputs, now_s, tod_s), ...] -> the list of step() results."""
    outs = []
    for inputs, now_s, tod_s in steps:
        outs.append(kind.step(inputs, now_s, tod_s))
    return outs


def drive_saved(kind, steps, key):
    """As drive(), but returns kind.save()[key] after each step."""
    seen = []
    for inputs, now_s, tod_s in steps:
        kind.step(inputs, now_s, tod_s)
        seen.append(kind.save()[key])
    return seen


def drive_lamp(kind, events):
    """events: [("presence" | "tick" | "wake", now_ms), ...] -> lamp level after each."""
    levels = []
    for what, now_ms in events:
        if what == "presence":
            kind.presence(now_ms)
        elif what == "wake":
            kind.presence(now_ms, False)
        else:
            kind.tick(now_ms)
        levels.append(kind.lamp.level)
    return levels


def ulp_meter(pulses, start_s, t_s, dry_s=3600):
    """What the ESP32's ULP counter (firmware/boards/esp32/ulp_pulse.S), started at start_s,
    knows at t_s of a meter that pulsed at the sorted times `pulses`: (pulses counted, seconds
    since the last one or the start capped at 65535, quiet runs that reached dry_s)."""
    last = start_s
    count = 0
    dry = 0
    for p in pulses:
        if p > t_s:
            break
        if p < start_s:
            continue
        if p - last >= dry_s:
            dry += 1
        last = p
        count += 1
    if t_s - last >= dry_s:
        dry += 1  # the run going on has reached its hour
    return count, min(65535, t_s - last), dry & 0xFFFF
