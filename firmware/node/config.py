# The node's configuration: config.json in flash, written by the technician tool (city-node
# provision) and changed by downlinks. A bad or missing file never bricks a node: each bad value
# falls back to its default, the rest is kept, and the first error is reported in status.
#
# config.json (every key optional; defaults below):
# {
#   "node_id": "leak-0001",            text id in the gateway registry (labels, logs)
#   "kind": "leak",                    leak | occupancy | lighting | binfill
#   "kind_config": {...},              the kind's own settings (firmware/kinds/<kind>.py DEFAULTS)
#   "link": "coap",                    coap (WiFi) | lora
#   "status_s": 86400,                 status record period
#   "wifi": {"ssid": "city", "password": "..."},
#   "coap": {"host": "192.168.1.2", "port": 5683, "path": "u",
#            "ack_timeout_ms": 2000, "max_retransmit": 4,     RFC 7252 defaults
#            "listen_port": 5683},             a lamp's own port: uplinks leave from it and
#                                              the gateway's wake-ups come to it (0: any)
#   "lora": {"freq_hz": 868100000, "sf": 7, "bw_hz": 125000, "cr": 1, "preamble": 8,
#            "power_dbm": 14, "rx_window_ms": 3000, "confirmed_tries": 3},
#            power_dbm: +14 at most (EU868: 25 mW ERP). A battery node listens for the answer
#            at a fixed delay after each uplink (node/loralink.py RX_DELAY_MS); rx_window_ms
#            is how long an always-on lamp waits for it in continuous receive
#            (firmware/README.md "LoRa timing")
#   "oscore": {"secret": "<32 hex>", "salt": "<16 hex>", "sender_id": "<hex>",
#              "recipient_id": "<hex>", "id_context": "<hex>" or null},
#   "pins": {...},                     overrides of the board's pin map, key by key; a bin's
#                                      "ranger_power": GPIO of the ranger's load switch
#   "boot_tries": 3,                   failed boots in a row before safe mode
#   "watchdog_ms": 60000,             above the longest CoAP back-off wait (16 x 3 s)
#   "ring_slots": 64,                  flash ring capacity in records (64 bytes each)
#   "battery": {"r_top": 1000000, "r_bottom": 1000000}   divider on the battery ADC pin:
#            2 x 1 MOhm draws 1.6 uA from 3.2 V, always connected (2 x 100 kOhm would draw 16 uA,
#            a third of the 5-year budget: bench/node.py). At that impedance the ESP32's ADC
#            needs a 100 nF capacitor from the pin to ground (firmware/drivers/battery.py)
# }
#
# Downlinks change "status_s" and "kind_config" (see node/downlink.py); the file is replaced
# atomically (write config.new, then rename) so a power cut leaves the old or the new one.

import json

from firmware.node.cfgfile import save  # noqa: F401 - part of this module's API

_KINDS = ("leak", "occupancy", "lighting", "binfill")
_LINKS = ("coap", "lora")

# name -> (default, check); a check is (lo, hi) for ints, a tuple of choices for text, or None
TOP = {  # type: dict
    "node_id": ("node", None),
    "kind": ("leak", _KINDS),
    "link": ("coap", _LINKS),
    "status_s": (86400, (60, 604800)),
    "boot_tries": (3, (1, 20)),
    "watchdog_ms": (60000, (5000, 300000)),
    "ring_slots": (64, (8, 512)),
}
SECTIONS = {  # type: dict
    "wifi": {"ssid": ("city", None), "password": ("", None)},
    "coap": {
        "host": ("127.0.0.1", None),
        "port": (5683, (1, 65535)),
        "path": ("u", None),
        "ack_timeout_ms": (2000, (100, 60000)),
        "max_retransmit": (4, (0, 8)),
        "listen_port": (0, (0, 65535)),
    },
    "lora": {
        "freq_hz": (868100000, (863000000, 870000000)),
        "sf": (7, (7, 12)),
        "bw_hz": (125000, (125000, 250000)),
        "cr": (1, (1, 4)),
        "preamble": (8, (6, 65535)),
        "power_dbm": (14, (2, 14)),
        "rx_window_ms": (3000, (100, 30000)),
        "confirmed_tries": (3, (1, 8)),
    },
    "battery": {"r_top": (1000000, (1, 10000000)), "r_bottom": (1000000, (1, 10000000))},
}
OSCORE_KEYS = ("secret", "salt", "sender_id", "recipient_id", "id_context")


def defaults():
    cfg = {}  # type: dict
    for key, spec in TOP.items():
        cfg[key] = spec[0]
    for name, section in SECTIONS.items():
        cfg[name] = {}
        for key, spec in section.items():
            cfg[name][key] = spec[0]
    cfg["kind_config"] = {}
    cfg["oscore"] = None
    cfg["pins"] = {}
    return cfg


def _check(where, value, default, check):
    """The value if it fits, else raise ValueError naming where."""
    if isinstance(default, str):
        if not isinstance(value, str) or len(value) > 64:
            raise ValueError(where + ": expected text")
        if check is not None and value not in check:
            raise ValueError(where + ": not one of " + ", ".join(check))
        return value
    # bool first: isinstance(True, int) is True on CPython only
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(where + ": expected an integer")
    if check is not None and not check[0] <= value <= check[1]:
        raise ValueError(where + ": %d out of range %d..%d" % (value, check[0], check[1]))
    return value


def _hex(where, value, lo, hi, optional=False):
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ValueError(where + ": expected hex text")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ValueError(where + ": not hex")
    if not lo <= len(raw) <= hi:
        raise ValueError(where + ": %d bytes, expected %d..%d" % (len(raw), lo, hi))
    return raw


def oscore_material(section):
    """The OSCORE section as bytes, or raise ValueError naming the bad key."""
    if not isinstance(section, dict):
        raise ValueError("oscore: missing")
    return {
        "secret": _hex("oscore.secret", section.get("secret"), 16, 32),
        "salt": _hex("oscore.salt", section.get("salt", ""), 0, 32),
        "sender_id": _hex("oscore.sender_id", section.get("sender_id"), 0, 7),
        "recipient_id": _hex("oscore.recipient_id", section.get("recipient_id"), 0, 7),
        "id_context": _hex("oscore.id_context", section.get("id_context"), 0, 16, True),
    }


def validate(raw):
    """(config, errors): every valid value of `raw` over the defaults; errors lists the rest."""
    cfg = defaults()
    errors = []
    if not isinstance(raw, dict):
        return cfg, ["config: expected an object"]
    for key, value in raw.items():
        try:
            if key in TOP:
                default, check = TOP[key]
                cfg[key] = _check(key, value, default, check)
            elif key in SECTIONS:
                if not isinstance(value, dict):
                    raise ValueError(key + ": expected an object")
                spec = SECTIONS[key]
                for sub in value:
                    if sub not in spec:
                        errors.append(key + "." + str(sub) + ": unknown")
                        continue
                    try:
                        default, check = spec[sub]
                        cfg[key][sub] = _check(key + "." + sub, value[sub], default, check)
                    except ValueError as e:
                        errors.append(str(e))
            elif key == "oscore":
                oscore_material(value)
                cfg["oscore"] = value
            elif key in ("kind_config", "pins"):
                if not isinstance(value, dict):
                    raise ValueError(key + ": expected an object")
                cfg[key] = value
            elif key == "location":
                cfg[key] = value  # for the gateway registry and labels only
            else:
                errors.append(str(key) + ": unknown")
        except ValueError as e:
            errors.append(str(e))
    return cfg, errors


def load(board, name="config.json"):
    """(config, errors) from flash; a missing or unreadable file gives the defaults."""
    try:
        with board.open(name, "r") as f:
            text = f.read()
    except OSError:
        return defaults(), ["config: missing"]
    try:
        raw = json.loads(text)
    except ValueError:
        return defaults(), ["config: not JSON"]
    return validate(raw)
