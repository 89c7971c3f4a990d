"""Fuzz: mutated protected messages are all refused with an OSCOREError, under both interpreters.

The loop runs inside the interpreter under test (tests/support/oscore_fuzz.py), so MicroPython
pays one bridge round trip for all of it. 3,000 cases here; `python -m bench oscore` runs
100,000.
"""

import pytest

COUNT = 3000


@pytest.mark.parametrize("seed", [1, 2])
def test_mutations_are_refused(interp, seed):
    fuzz = interp.module("tests.support.oscore_fuzz")
    result = fuzz.run(COUNT, seed)
    assert result["examples"] == []
    assert result["crashed"] == 0
    assert result["accepted"] == 0
    # Every mutation is accounted for: refused, a no-op, or an edit of the outer Observe
    # value only (unprotected by design; the message that comes out is the original one).
    total = result["refused"] + result["unchanged"] + result["unprotected_field"]
    assert total == COUNT
    assert result["unprotected_field"] <= COUNT // 100
    assert sum(result["errors"].values()) == result["refused"]
    # The mutations reach every stage of reception, the AEAD check most of all.
    assert set(result["errors"]) >= {
        "MalformedMessage",
        "NotProtected",
        "UnknownContext",
        "DecryptionFailed",
    }
    assert result["errors"]["DecryptionFailed"] > COUNT // 2


def test_same_stream_on_both_interpreters(interp):
    # The fuzzer's own PRNG makes the two interpreters see identical cases: the counts agree
    # with the CPython run exactly.
    from tests.support import oscore_fuzz

    assert interp.module("tests.support.oscore_fuzz").run(500, 9) == oscore_fuzz.run(500, 9)
