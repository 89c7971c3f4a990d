"""CPython-side helpers for the CBOR tests: comparison, cbor2 conversion, an independent
reference encoder and the hypothesis strategies. Values built here cross to MicroPython through
`to_interp`, which makes the objects only the codec knows (Simple) on the far side."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import cbor2
from hypothesis import strategies as st

from protocol.cbor import Simple, Tag

U64 = 1 << 64


def kind(x: Any) -> str:
    """The class name, also for an object the bridge keeps in the micropython process."""
    return str(getattr(x, "_kind", None) or type(x).__name__)


def norm(x: Any) -> Any:
    """A hashable tree that is equal exactly when two decoded values are the same CBOR data:
    True is not 1, 1 is not 1.0, -0.0 is not 0.0, NaN equals NaN, tuple and list agree."""
    if x is None or x is True or x is False:
        return ("atom", x)
    if isinstance(x, int):
        return ("int", x)
    if isinstance(x, float):
        return ("float", "nan" if x != x else struct.pack(">d", x))
    if isinstance(x, str):
        return ("str", x)
    if isinstance(x, (bytes, bytearray)):
        return ("bytes", bytes(x))
    if isinstance(x, (list, tuple)):
        return ("array", tuple(norm(i) for i in x))
    if isinstance(x, Mapping):  # cbor2 reads maps inside tags as its frozendict
        return ("map", len(x), frozenset((norm(k), norm(v)) for k, v in x.items()))
    if isinstance(x, (Tag, cbor2.CBORTag)):
        return ("tag", x.tag, norm(x.value))
    if x is cbor2.undefined:
        return ("simple", 23)
    if isinstance(x, cbor2.CBORSimpleValue) or kind(x) == "Simple":
        return ("simple", x.value)
    raise TypeError(f"cannot compare {kind(x)}")


def contains_tag(x: Any) -> bool:
    if isinstance(x, (Tag, cbor2.CBORTag)):
        return True
    if isinstance(x, (list, tuple)):
        return any(contains_tag(i) for i in x)
    if isinstance(x, dict):
        return any(contains_tag(k) or contains_tag(v) for k, v in x.items())
    return False


def simple_key_beside_int(x: Any) -> bool:
    """A map holding both simple(n) and the integer n as keys.

    They are distinct data items in CBOR, but cbor2's CBORSimpleValue compares and hashes equal
    to the int, so cbor2 merges the two entries where we keep both: no common value to compare.
    """
    if isinstance(x, (list, tuple)):
        return any(simple_key_beside_int(i) for i in x)
    if isinstance(x, dict):
        simple = {k.value for k in x if kind(k) == "Simple"}  # also one the bridge keeps
        ints = {k for k in x if isinstance(k, int) and not isinstance(k, bool)}
        return bool(simple & ints) or any(
            simple_key_beside_int(k) or simple_key_beside_int(v) for k, v in x.items()
        )
    return False


def to_cbor2(x: Any) -> Any:
    if isinstance(x, Simple):
        return cbor2.undefined if x.value == 23 else cbor2.CBORSimpleValue(x.value)
    if isinstance(x, Tag):
        return cbor2.CBORTag(x.tag, to_cbor2(x.value))
    if isinstance(x, list):
        return [to_cbor2(i) for i in x]
    if isinstance(x, dict):
        return {to_cbor2(k): to_cbor2(v) for k, v in x.items()}
    return x


def to_interp(cbor: Any, x: Any) -> Any:
    """The value as the interpreter under test holds it (Simple is made on its side)."""
    if isinstance(x, Simple):
        return cbor.Simple(x.value)
    if isinstance(x, Tag):
        return Tag(x.tag, to_interp(cbor, x.value))
    if isinstance(x, list):
        return [to_interp(cbor, i) for i in x]
    if isinstance(x, tuple):
        return tuple(to_interp(cbor, i) for i in x)
    if isinstance(x, dict):
        return {to_interp(cbor, k): to_interp(cbor, v) for k, v in x.items()}
    return x


def _array_head(n: int) -> bytes:
    # cbor2 writes the head of an n-item array before n one-byte zeros
    return cbor2.dumps([0] * n, canonical=True)[: -n or None]


def ref_encode(x: Any) -> bytes:
    """RFC 8949 preferred serialisation with §4.2.1 map order, built independently of
    protocol.cbor: cbor2 (canonical) for every scalar, maps sorted by encoded key here."""
    if isinstance(x, (list, tuple)):
        return _array_head(len(x)) + b"".join(ref_encode(i) for i in x)
    if isinstance(x, dict):
        head = _array_head(len(x))
        head = bytes([head[0] + 0x20]) + head[1:]  # major type 4 -> 5, same argument
        keys = sorted(x, key=ref_encode)
        return head + b"".join(ref_encode(k) + ref_encode(x[k]) for k in keys)
    if isinstance(x, Tag):
        return cbor2.dumps(cbor2.CBORTag(x.tag, 0))[:-1] + ref_encode(x.value)
    return cbor2.dumps(to_cbor2(x), canonical=True)


def cbor2_order_agrees(x: Any) -> bool:
    """True when cbor2's canonical map order (RFC 7049: shorter keys first) happens to be the
    RFC 8949 bytewise order for every map in x, so cbor2's bytes must equal ours exactly."""
    if isinstance(x, Tag):
        return cbor2_order_agrees(x.value)
    if isinstance(x, (list, tuple)):
        return all(cbor2_order_agrees(i) for i in x)
    if isinstance(x, dict):
        enc = [ref_encode(k) for k in x]
        if sorted(enc) != sorted(enc, key=lambda e: (len(e), e)):
            return False
        return all(cbor2_order_agrees(k) and cbor2_order_agrees(v) for k, v in x.items())
    return True


def _cbor2_leaves_tag_alone(n: int) -> bool:
    """cbor2 gives meaning to many tags (dates, decimals, sets...); property tests use the
    ones it hands back untouched, whatever the content."""
    if n in (2, 3):
        return False
    for content in (0, "x", [0], b"x", {0: 0}):
        try:
            back = cbor2.loads(cbor2.dumps(cbor2.CBORTag(n, content)))
        except Exception:  # noqa: BLE001 - any failure means cbor2 interprets the tag
            return False
        if not isinstance(back, cbor2.CBORTag) or back.tag != n:
            return False
        if norm(back.value) != norm(content):
            return False
    return True


SIMPLE_NUMBERS = [*range(20), 23, *range(32, 256)]

simple_values = st.sampled_from(SIMPLE_NUMBERS).map(Simple)
# chosen once: filtering every draw through cbor2 would starve hypothesis
FREE_TAGS = [
    n
    for n in [*range(301), 1000, 40000, 65535, 65536, 2**32 - 1, 2**32, 2**63, U64 - 2, U64 - 1]
    if _cbor2_leaves_tag_alone(n)
]
tag_numbers = st.sampled_from(FREE_TAGS)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(U64 + 2), U64 + 2),
    st.floats(),
    st.floats(width=32),
    st.floats(width=16),
    st.text(max_size=12),
    st.binary(max_size=12),
    simple_values,
)
map_keys = st.one_of(
    st.integers(), st.integers(-30, 30), st.text(max_size=6), st.binary(max_size=6)
)

# max_leaves keeps nesting well inside MAX_DEPTH (16)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(map_keys, inner, max_size=5),
        st.builds(Tag, tag_numbers, inner),
    ),
    max_leaves=10,
)
