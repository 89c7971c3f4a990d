# The four node kinds: leak, occupancy, lighting, binfill (one module each).
#
# A kind holds the local logic of one node kind and nothing else: no network, no flash, no
# machine import. The runtime (firmware/node/) owns the drivers, the clock, the links and the
# store; it hands the kind what it needs and sends what the kind returns.
#
# Public API (each kind module has one class of this shape; `load(name)` below finds it):
#
#   kind = Leak(config=None, state=None)          (Lighting also takes lamp=, ticks_ms=)
#       config: dict, the node configuration's kind section (JSON in flash). Keys are the
#               protocol.schema downlink field names where the schema has one (leak_config,
#               occupancy_config, lighting_profile, binfill_config, and "report_s" from
#               config), plus local-only keys; every kind's DEFAULTS dict lists them. Missing
#               keys take the defaults; a bad value raises ValueError naming the key (the
#               runtime then falls back to DEFAULTS and reports the error in its status).
#       state:  the dict a previous `kind.save()` returned (kept by the runtime in RTC memory
#               across deep sleep; small ints, lists and a dict of them, CBOR well under 200
#               bytes), or None on a cold boot.
#
#   inputs = kind.read(sensors)
#       The only method that touches drivers. `sensors` is a dict role -> driver instance the
#       runtime builds from the board; roles are in the module's SENSORS tuple:
#           leak: "meter" (pulse.PulseCounter), "probe" (leakprobe.LeakProbe)
#           occupancy: "mag" (qmc5883l.QMC5883L)
#           lighting: "pir" (pir.PIR) or "radar" (ld2410.LD2410); the lamp goes to __init__
#           binfill: "ranger" (a02yyuw.A02YYUW or hcsr04.HCSR04), "temp" (anything with
#                    read_c_x10()), "tilt" (a pin: value() true when tilted)
#       Returns a plain dict of values; a missing or failing sensor gives None, never raises.
#
#   out = kind.step(inputs, now_s, tod_s=None)
#       Pure logic on plain values, so tests script it directly.
#       now_s: node seconds, monotonic across deep sleep (the runtime keeps it with the RTC).
#       tod_s: local seconds since midnight once the gateway's time sync has arrived
#              (unix_s + utc_offset_min * 60 from the "time" downlink, carried forward on the
#              node clock), else None: leak's night window and lighting's schedule wait for it.
#       Returns a dict:
#           "reading": dict or None  the kind's periodic record when one is due
#           "events":  list of dicts  records to send now (NON is fine)
#           "alarms":  list of dicts  records to send now, confirmed, kept ahead of routine
#                                     data in the store-and-forward buffer
#           "wake_s":  int >= 1       seconds until the kind wants its next step (a battery
#                                     node deep-sleeps for min(wake_s, the runtime's timers))
#       Every record is a protocol.schema uplink message dict ("type": "leak" / "occupancy" /
#       "lighting" / "binfill" / "alarm" / "event"); the runtime adds "age_s"/"seq" and calls
#       schema.encode_uplink. Alarms carry "active": False once their condition clears.
#
#   out = kind.sample(sensors, now_s, tod_s=None)   is step(read(sensors), now_s, tod_s)
#
#   kind.save() -> dict            the state to keep across deep sleep
#   kind.configure(changes)        apply a config downlink: a dict of config keys (a decoded
#                                  schema record may be passed as is; its "type" is ignored).
#                                  Validates everything first and raises ValueError naming the
#                                  bad key without applying anything; returns the new config.
#   out = kind.command(cmd, now_s) cmd: the decoded "command" downlink dict ({"command":
#       "ack_alarm", "alarm": "bin_full"}) or just the command name. Same result shape as step.
#       Kinds handle "ack_alarm" (all: stops reminders of that alarm, or of all when no alarm
#       is named), "recalibrate" (occupancy), "bin_emptied" (binfill), "wake" (lighting, with
#       an optional "duration_s" hold). "reboot" and "identify" are the runtime's; a command a
#       kind does not handle raises ValueError, for the runtime to report in its status.
#
# Lighting only (mains powered, never sleeps): the fast path that changes the lamp within one
# 20 ms tick of a detection and never waits on the network:
#   kind.presence(now_ms, detected=True, hold_s=None)
#                           from the PIR IRQ callback (soft IRQ) or the radar reader: starts
#                           the fade to max_level_pct on the lamp driver at once, and returns
#                           True when it queued a presence event (the runtime should then call
#                           step() soon, so the gateway can wake the neighbouring lamps).
#                           detected=False is a wake-up from the gateway: light, no event.
#   kind.tick(now_ms) -> ms until it wants the next tick (20 while fading, up to 1000 idle)
#   await kind.run()        an asyncio task doing that loop, woken early by presence().
# now_ms values are time.ticks_ms() readings, compared with ticks_diff: wrap-around is safe.

KINDS = {
    "leak": ("firmware.kinds.leak", "Leak"),
    "occupancy": ("firmware.kinds.occupancy", "Occupancy"),
    "lighting": ("firmware.kinds.lighting", "Lighting"),
    "binfill": ("firmware.kinds.binfill", "BinFill"),
}


def load(name):
    """The kind class for a config name, imported lazily (only one kind lives on a node)."""
    entry = KINDS.get(name)
    if entry is None:
        raise ValueError("kind: unknown " + str(name))
    mod = __import__(entry[0], None, None, (entry[1],))
    return getattr(mod, entry[1])


def result(reading=None, wake_s=900):
    """The empty shape of step()'s return value."""
    return {"reading": reading, "events": [], "alarms": [], "wake_s": wake_s}


def merge(config, defaults, changes, checks):
    """Validate `changes` (key -> (lo, hi) ranges in `checks`) and return the merged config.

    Nothing is applied when one key is bad: the ValueError names it.
    """
    for key in changes:
        if key == "type":
            continue
        if key not in defaults:
            raise ValueError("config: unknown key " + str(key))
        value = changes[key]
        # bool first: isinstance(True, int) differs between MicroPython and CPython
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("config: " + key + " must be an integer")
        lohi = checks.get(key)
        if lohi is not None and not lohi[0] <= value <= lohi[1]:
            raise ValueError("config: " + key + " out of range")
    new = dict(defaults) if config is None else dict(config)
    for key in changes:
        if key != "type":
            new[key] = changes[key]
    return new


def command_name(cmd):
    """(name, the command dict) from a decoded command record or a bare name."""
    if isinstance(cmd, str):
        return cmd, {"command": cmd}
    return cmd.get("command"), cmd


def raise_alarm(out, alarms, name, active, now_s, *, remind_s, value=None):
    """Latched alarm bookkeeping shared by the kinds.

    `alarms` (part of the kind's saved state) maps an alarm name to [acknowledged, last_sent_s].
    An alarm goes out on the step where its condition starts, again every `remind_s` while it
    lasts unacknowledged (a lost confirmed message is the link's business; reminders are for
    an alarm nobody acted on), never after "ack_alarm", and once more with "active": False when
    the condition clears, so a recurrence alarms again.
    """
    entry = alarms.get(name)
    if not active:
        if entry is not None:
            del alarms[name]
            out["alarms"].append(alarm_record(name, False, value))
        return
    if entry is None:
        alarms[name] = [0, now_s]
    elif entry[0] or now_s - entry[1] < remind_s:
        return
    else:
        entry[1] = now_s
    out["alarms"].append(alarm_record(name, True, value))


def alarm_record(name, active, value=None):
    msg = {"type": "alarm", "alarm": name, "active": active}
    if value is not None:
        msg["value"] = value
    return msg


def ack_alarms(alarms, cmd):
    """Apply an ack_alarm command: the named alarm, or every one when none is named."""
    only = cmd.get("alarm")
    for name in alarms:
        if only is None or only == name:
            alarms[name][0] = 1


def due(last_s, now_s, every_s):
    """A periodic record is due: first time, or `every_s` passed (a tenth early is allowed, so
    a wake that comes a little early does not push the record a whole cycle late)."""
    return last_s < 0 or now_s - last_s >= every_s - every_s // 10
