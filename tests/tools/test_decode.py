"""`city-node decode`: frames and payloads in words, checked against exact bytes."""

from __future__ import annotations

import json
from pathlib import Path

import cbor2
import pytest

from gateway.security import NodeKeys, write_node_context
from protocol import coap, oscore, schema
from tools.cli import main
from tools.decode import DecodeError, Keys, describe, diagnostic, parse_hex

SECRET = bytes(range(16))
SALT = bytes(range(8))
LEAK = {"type": "leak", "volume_l": 1234, "flow_lh": 36, "seq": 7}


def uplink_payload() -> bytes:
    return bytes(cbor2.dumps(schema.encode_uplink([LEAK]), canonical=True))


def plain_request(payload: bytes) -> bytes:
    options = [*coap.uri_path_options("u"), (coap.CONTENT_FORMAT, coap.uint_bytes(60))]
    return coap.Message(coap.CON, coap.POST, 0x1234, b"\xa1\xb2", options, payload).encode()


def protected_request(seqno: int = 5, kid: bytes = b"\x01") -> bytes:
    node = oscore.SecurityContext(SECRET, kid, b"", SALT)
    return bytes(node.protect_request(plain_request(uplink_payload()), seqno))


def test_a_plain_coap_request_shows_header_options_and_records() -> None:
    frame = plain_request(uplink_payload())
    # the exact bytes the description is about: header 42 02 12 34, token a1b2, Uri-Path "u"
    # (delta 11, length 1), Content-Format 60 (delta 1, length 1), payload marker
    assert frame[:11].hex() == "42021234a1b2b175113cff"
    lines = describe(frame)
    assert lines[0] == f"{len(frame)} bytes"
    assert lines[1] == "CoAP CON 0.02 POST  mid 4660 (0x1234)  token a1b2"
    assert lines[2] == '  option 11 Uri-Path        "u"'
    assert lines[3] == "  option 12 Content-Format  60 (application/cbor)"
    assert lines[4] == f"  payload {len(uplink_payload())} bytes:"
    assert lines[5] == "    CBOR [1, {0: 1, 2: 7, 4: 1234, 5: 36}]"
    assert lines[6] == "    uplink, schema v1, 1 record:"
    words = lines[7].split()
    assert words[0] == "leak"
    assert sorted(words[1:]) == sorted(
        ["age_s=0", "seq=7", "volume_l=1234", "flow_lh=36", "leak=none", "probe_wet=False"]
    )


def test_an_oscore_request_shows_the_option_fields_and_decrypts_with_the_keys() -> None:
    frame = protected_request(seqno=300)
    lines = describe(frame)
    oscore_line = next(line for line in lines if "OSCORE" in line)
    # flags 0x0a: a 2-byte Partial IV and a kid; PIV 012c = 300; kid 01
    assert oscore_line.split(None, 3)[3] == (
        "0a012c01 (partial IV 012c = sequence number 300, kid 01)"
    )
    assert any("give --secret and --salt" in line for line in lines)
    lines = describe(frame, Keys(SECRET, SALT, b"\x01"))
    assert "  decrypted:" in lines
    at = lines.index("  decrypted:")
    assert lines[at + 1] == "    CoAP CON 0.02 POST  mid 4660 (0x1234)  token a1b2"
    assert '      option 11 Uri-Path        "u"' in lines
    assert any(line.strip().startswith("leak ") and "volume_l=1234" in line for line in lines)
    # a wrong key is said so, not a crash
    wrong = describe(frame, Keys(bytes(16), SALT, b"\x01"))
    assert any(line.startswith("  decryption failed: DecryptionFailed") for line in wrong)


def test_the_gateway_key_folder_is_found_by_kid(tmp_path: Path) -> None:
    keys_dir = tmp_path / "oscore"
    write_node_context(keys_dir, "other", NodeKeys(b"\x02", bytes(16), SALT), b"")
    write_node_context(keys_dir, "leak-7", NodeKeys(b"\x07", SECRET, SALT), b"")
    lines = describe(protected_request(kid=b"\x07"), keys_dir=keys_dir)
    assert "  decrypted:" in lines
    assert any("volume_l=1234" in line for line in lines)
    lines = describe(protected_request(kid=b"\x09"), keys_dir=keys_dir)
    assert "  no key folder at the gateway has kid 09" in lines


def test_a_bare_cbor_downlink_and_a_medium_datagram() -> None:
    downlink = cbor2.dumps(schema.encode_downlink([{"type": "config", "report_s": 60}]))
    lines = describe(bytes(downlink))
    assert lines[1] == "CBOR [1, {0: 0, 4: 60}]"
    assert lines[2] == "downlink, schema v1, 1 record:"
    assert lines[3].split() == ["config", "report_s=60"]
    datagram = json.dumps({"op": "rx", "data": downlink.hex(), "rssi": -80})
    assert parse_hex(datagram) == downlink
    assert describe(bytes.fromhex("a1616101"))[1:] == [
        'CBOR {"a": 1}',
        "(not an uplink or downlink of protocol.schema)",
    ]


def test_hex_input_forms_and_refusals() -> None:
    assert parse_hex("0x42 02:12-34\n") == bytes.fromhex("42021234")
    with pytest.raises(DecodeError, match="not hex"):
        parse_hex("4z")
    with pytest.raises(DecodeError, match="not hex"):
        parse_hex("123")
    with pytest.raises(DecodeError, match="nothing to decode"):
        parse_hex("  ")
    with pytest.raises(DecodeError, match="neither CoAP"):
        describe(bytes.fromhex("ff"))
    assert diagnostic([b"\x01", "é", 1.5, None, True, -3]) == "[h'01', \"é\", 1.5, null, true, -3]"


def test_the_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    frame = protected_request(seqno=1)
    assert main(["decode", frame.hex(), "--secret", SECRET.hex(), "--salt", SALT.hex()]) == 0
    out = capsys.readouterr().out
    assert "sequence number 1, kid 01" in out
    assert "volume_l=1234" in out
    assert main(["decode", "zz"]) == 2
    assert "not hex" in capsys.readouterr().err
