"""The bridge itself: values cross it unchanged, errors keep their name and family."""

import math

import pytest


def test_values_round_trip(interp):
    json = interp.module("json")
    # json.loads is the simplest function present on both sides with a value-only result
    assert json.loads('[1, "é", {"a": null}]') == [1, "é", {"a": None}]
    ustruct = interp.module("struct")
    assert ustruct.pack(">d", 1.1) == b"?\xf1\x99\x99\x99\x99\x99\x9a"
    assert ustruct.unpack(">d", b"?\xf1\x99\x99\x99\x99\x99\x9a") == (1.1,)
    assert math.isnan(ustruct.unpack(">d", bytes.fromhex("7ff8000000000000"))[0])


def test_errors_keep_their_family(interp):
    json = interp.module("json")
    with pytest.raises(ValueError):
        json.loads("[1,")


def test_live_objects_stay_remote(interp):
    io = interp.module("io")
    buf = io.BytesIO(b"abc")
    assert buf.read(2) == b"ab"
    assert buf.read() == b"c"


def test_errors_keep_builtin_families(interp):
    io = interp.module("io")
    with pytest.raises(AttributeError):
        _ = io.no_such_name


def test_text_beyond_the_basic_plane_crosses_intact(interp):
    json = interp.module("json")
    assert json.loads('"\U0001f6b2 vélo"') == "\U0001f6b2 vélo"
