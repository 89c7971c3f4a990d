# Runs a whole script of wakes through a kind inside MicroPython, so a property test costs one
# bridge round trip per example rather than one per wake.


def drive(kind, steps):
    """steps: [(inputs, now_s, tod_s), ...] -> the list of step() results."""
    outs = []
    for inputs, now_s, tod_s in steps:
        outs.append(kind.step(inputs, now_s, tod_s))
    return outs


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
