# Runs on the MicroPython unix port: the far end of tests/support/interp.py.
#
# One JSON request per stdin line, one JSON reply per stdout line. Values that JSON cannot
# carry (bytes, floats exactly, tuples, maps with non-string keys, CBOR tags, live objects)
# travel as small tagged dicts; live objects stay here and are named by a handle number.
import json
import struct
import sys

_objects = {}
_next = [1]


# The built-in exception families a remote error is reported under, so that the CPython side
# can raise a class that `except ValueError` / `pytest.raises(KeyError)` still catch.
_FAMILIES = (ValueError, KeyError, IndexError, AttributeError, TypeError, OSError, MemoryError)


def _families(cls):
    return [f.__name__ for f in _FAMILIES if issubclass(cls, f)]


def _keep(obj):
    hid = _next[0]
    _next[0] += 1
    _objects[hid] = obj
    return hid


def _out(v):
    # bool before int: isinstance(True, int) is False on MicroPython but keep the order anyway
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return {"$f": struct.pack(">d", v).hex()}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"$b": bytes(v).hex()}
    if isinstance(v, list):
        return [_out(x) for x in v]
    if isinstance(v, tuple):
        return {"$t": [_out(x) for x in v]}
    if isinstance(v, dict):
        return {"$d": [[_out(k), _out(x)] for k, x in v.items()]}
    if type(v).__name__ == "Tag" and hasattr(v, "tag"):
        return {"$tag": v.tag, "v": _out(v.value)}
    if isinstance(v, type):
        exc = issubclass(v, Exception)
        return {
            "$h": _keep(v),
            "class": v.__name__,
            "exc": exc,
            "families": _families(v) if exc else [],
        }
    return {"$h": _keep(v), "type": type(v).__name__, "callable": callable(v)}


def _in(v):
    if isinstance(v, list):
        return [_in(x) for x in v]
    if not isinstance(v, dict):
        return v
    if "$f" in v:
        return struct.unpack(">d", bytes.fromhex(v["$f"]))[0]
    if "$b" in v:
        return bytes.fromhex(v["$b"])
    if "$t" in v:
        return tuple(_in(x) for x in v["$t"])
    if "$d" in v:
        return {_in(k): _in(x) for k, x in v["$d"]}
    if "$tag" in v:
        from protocol.cbor import Tag

        return Tag(v["$tag"], _in(v["v"]))
    if "$h" in v:
        return _objects[v["$h"]]
    raise ValueError("bridge: unknown value")


def _do(req):
    for hid in req.get("free", ()):
        _objects.pop(hid, None)
    op = req["op"]
    if op == "import":
        mod = __import__(req["name"])
        for part in req["name"].split(".")[1:]:
            mod = getattr(mod, part)
        return mod
    target = _objects[req["h"]]
    if op == "getattr":
        return getattr(target, req["name"])
    if op == "setattr":
        setattr(target, req["name"], _in(req["value"]))
        return None
    if op == "call":
        kwargs = {}
        for k, x in req.get("kwargs", {}).items():
            kwargs[k] = _in(x)
        return target(*_in(req.get("args", [])), **kwargs)
    raise ValueError("bridge: unknown op " + op)


def main():
    sys.path.insert(0, "")
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        try:
            reply = {"ok": _out(_do(json.loads(line)))}
        except Exception as e:  # noqa: BLE001 - every failure goes back to the test
            reply = {
                "err": type(e).__name__,
                "msg": str(e),
                "families": _families(type(e)),
            }
        sys.stdout.write(json.dumps(reply))
        sys.stdout.write("\n")
        sys.stdout.flush()


main()
