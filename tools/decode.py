"""`city-node decode HEX`: a frame or a payload, human-readable.

Accepts what a technician copies from a log or a sniffer: a CoAP message (a UDP datagram, or
the payload of a LoRa frame: the same bytes), a bare CBOR payload, or a radio-medium datagram
(JSON with a "data" field). Prints the CoAP header and options (the OSCORE option taken apart:
Partial IV = the sender's sequence number, kid, kid context), then the payload: CBOR in
diagnostic notation and, when it fits protocol.schema, the records by name.

An OSCORE payload is ciphertext. With the node's key material (`--secret/--salt`, or the
gateway's key folders through `--gateway-config`, found by the kid) a request is decrypted
with protocol.oscore and its inner message shown the same way.
"""

from __future__ import annotations

import json
import math
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2

from protocol import coap, oscore, schema

FORMATS = {
    0: "text/plain",
    40: "application/link-format",
    50: "application/json",
    60: "application/cbor",
    110: "application/senml+json",
    112: "application/senml+cbor",
}
UINT_OPTIONS = {coap.CONTENT_FORMAT, coap.ACCEPT, coap.MAX_AGE, coap.URI_PORT, coap.OBSERVE}
TEXT_OPTIONS = {coap.URI_PATH, coap.URI_QUERY, coap.URI_HOST, coap.LOCATION_PATH}


class DecodeError(ValueError):
    pass


@dataclass(frozen=True)
class Keys:
    """A node's OSCORE input parameters, seen from the gateway (which decrypts requests)."""

    secret: bytes
    salt: bytes
    kid: bytes  # the node's sender id
    gateway_id: bytes = b""
    id_context: bytes | None = None


def parse_hex(text: str) -> bytes:
    cleaned = text.strip()
    if cleaned.startswith("{"):
        try:
            cleaned = str(json.loads(cleaned)["data"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DecodeError(f"a JSON datagram needs a hex 'data' field ({exc})") from None
    cleaned = cleaned.removeprefix("0x").removeprefix("0X")
    for sep in (" ", ":", "\n", "\t", "-"):
        cleaned = cleaned.replace(sep, "")
    if not cleaned:
        raise DecodeError("nothing to decode")
    if len(cleaned) % 2 or any(c not in string.hexdigits for c in cleaned):
        raise DecodeError("not hex: give the bytes as hex digits, e.g. 5002abcd...")
    return bytes.fromhex(cleaned)


def keys_from_gateway(keys_dir: Path, kid: bytes) -> Keys | None:
    """The key material of the node with this kid, from the gateway's key folders."""
    for settings_path in sorted(keys_dir.glob("*/settings.json")):
        try:
            settings = json.loads(settings_path.read_text())
            if bytes.fromhex(settings["recipient-id_hex"]) != kid:
                continue
            secret = json.loads((settings_path.parent / "secret.json").read_text())
        except (OSError, ValueError, KeyError):
            continue
        context = settings.get("id-context_hex")
        return Keys(
            bytes.fromhex(secret["secret_hex"]),
            bytes.fromhex(secret.get("salt_hex", "")),
            kid,
            bytes.fromhex(settings.get("sender-id_hex", "")),
            bytes.fromhex(context) if context is not None else None,
        )
    return None


# -- CBOR -------------------------------------------------------------------------------------
def diagnostic(value: Any) -> str:
    """CBOR diagnostic notation (RFC 8949 §8) of a decoded value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, bytes | bytearray):
        return f"h'{bytes(value).hex()}'"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(diagnostic(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{diagnostic(k)}: {diagnostic(v)}" for k, v in value.items()) + "}"
    if isinstance(value, cbor2.CBORTag):
        return f"{value.tag}({diagnostic(value.value)})"
    if isinstance(value, cbor2.CBORSimpleValue):
        return f"simple({value.value})"
    if value is cbor2.undefined:
        return "undefined"
    return repr(value)


def record_line(record: dict[str, Any]) -> str:
    fields = " ".join(f"{k}={v}" for k, v in record.items() if k != "type")
    return f"{record['type']:<10} {fields}"


def describe_cbor(data: bytes, indent: str = "") -> list[str]:
    try:
        value = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, EOFError) as exc:
        return [f"{indent}not CBOR ({exc}): {data.hex()}"]
    lines = [f"{indent}CBOR {diagnostic(value)}"]
    for direction, decode in (
        ("uplink", schema.decode_uplink),
        ("downlink", schema.decode_downlink),
    ):
        try:
            records = decode(value)
        except ValueError:
            continue
        n = len(records)
        lines.append(f"{indent}{direction}, schema v{value[0]}, {n} record{'s' * (n != 1)}:")
        lines += [f"{indent}  {record_line(r)}" for r in records]
        break
    else:
        lines.append(f"{indent}(not an uplink or downlink of protocol.schema)")
    return lines


# -- CoAP -------------------------------------------------------------------------------------
TYPES = ("CON", "NON", "ACK", "RST")
CODE_NAMES = {
    coap.EMPTY: "Empty",
    coap.GET: "GET",
    coap.POST: "POST",
    coap.PUT: "PUT",
    coap.DELETE: "DELETE",
    coap.FETCH: "FETCH",
    coap.PATCH: "PATCH",
    coap.IPATCH: "iPATCH",
    coap.CREATED: "Created",
    coap.DELETED: "Deleted",
    coap.VALID: "Valid",
    coap.CHANGED: "Changed",
    coap.CONTENT: "Content",
    coap.CONTINUE: "Continue",
    coap.BAD_REQUEST: "Bad Request",
    coap.UNAUTHORIZED: "Unauthorized",
    coap.BAD_OPTION: "Bad Option",
    coap.FORBIDDEN: "Forbidden",
    coap.NOT_FOUND: "Not Found",
    coap.METHOD_NOT_ALLOWED: "Method Not Allowed",
    coap.NOT_ACCEPTABLE: "Not Acceptable",
    coap.REQUEST_ENTITY_INCOMPLETE: "Request Entity Incomplete",
    coap.PRECONDITION_FAILED: "Precondition Failed",
    coap.REQUEST_ENTITY_TOO_LARGE: "Request Entity Too Large",
    coap.UNSUPPORTED_CONTENT_FORMAT: "Unsupported Content-Format",
    coap.TOO_MANY_REQUESTS: "Too Many Requests",
    coap.INTERNAL_SERVER_ERROR: "Internal Server Error",
    coap.NOT_IMPLEMENTED: "Not Implemented",
    coap.BAD_GATEWAY: "Bad Gateway",
    coap.SERVICE_UNAVAILABLE: "Service Unavailable",
    coap.GATEWAY_TIMEOUT: "Gateway Timeout",
    coap.PROXYING_NOT_SUPPORTED: "Proxying Not Supported",
}


def code_name(code: int) -> str:
    name = CODE_NAMES.get(code)
    text = str(coap.code_text(code))
    return f"{text} {name}" if name else text


def option_name(number: int) -> str:
    return str(coap._option_names().get(number, f"Option{number}"))


def option_value(number: int, value: bytes) -> str:
    if number == coap.OSCORE:
        return describe_oscore_option(value)
    if number in TEXT_OPTIONS:
        return json.dumps(value.decode("utf-8", "replace"))
    if number in UINT_OPTIONS:
        n = coap.uint_value(value)
        if number in (coap.CONTENT_FORMAT, coap.ACCEPT) and n in FORMATS:
            return f"{n} ({FORMATS[n]})"
        return str(n)
    return value.hex() or "(empty)"


def describe_oscore_option(value: bytes) -> str:
    try:
        piv, kid_context, kid = oscore.decode_option(value)
    except ValueError as exc:
        return f"{value.hex()} (malformed: {exc})"
    parts = [value.hex() or "(empty)"]
    if piv is not None:
        parts.append(f"partial IV {piv.hex()} = sequence number {int.from_bytes(piv, 'big')}")
    if kid is not None:
        parts.append(f"kid {kid.hex() or '(empty)'}")
    if kid_context is not None:
        parts.append(f"kid context {kid_context.hex()}")
    if len(parts) == 1:
        parts.append("no fields: a response using the request's nonce")
    return parts[0] + " (" + ", ".join(parts[1:]) + ")"


def describe_message(message: coap.Message, indent: str = "") -> list[str]:
    head = (
        f"{indent}CoAP {TYPES[message.type]} {code_name(message.code)}"
        f"  mid {message.mid} (0x{message.mid:04x})"
        f"  token {message.token.hex() or '(none)'}"
    )
    lines = [head]
    for number, value in message.options:
        name = f"{number} {option_name(number)}"
        lines.append(f"{indent}  option {name:<18} {option_value(number, value)}")
    return lines


def describe(data: bytes, keys: Keys | None = None, keys_dir: Path | None = None) -> list[str]:
    """Lines describing the bytes; raises DecodeError when they are neither CoAP nor CBOR."""
    if data and data[0] >> 6 == 1:
        try:
            message = coap.decode(data)
        except ValueError as exc:
            coap_error = str(exc)
        else:
            return _describe_coap(message, data, keys, keys_dir)
    else:
        coap_error = "the first byte is not CoAP version 1"
    try:
        cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, EOFError) as exc:
        raise DecodeError(f"neither CoAP ({coap_error}) nor CBOR ({exc})") from None
    return [f"{len(data)} bytes", *describe_cbor(data)]


def _describe_coap(
    message: coap.Message, data: bytes, keys: Keys | None, keys_dir: Path | None
) -> list[str]:
    lines = [f"{len(data)} bytes", *describe_message(message)]
    protected = message.option(coap.OSCORE)
    if not message.payload:
        lines.append("  no payload")
        return lines
    if protected is None:
        lines.append(f"  payload {len(message.payload)} bytes:")
        lines += describe_cbor(message.payload, "    ")
        return lines
    lines.append(
        f"  payload {len(message.payload)} bytes: OSCORE ciphertext (inner code, options and "
        f"payload) and its {oscore.TAG_LEN}-byte tag"
    )
    if not 1 <= message.code < 32:
        lines.append("  a protected response: decrypting it needs its request's kid and IV")
        return lines
    try:
        _piv, _ctx, kid = oscore.decode_option(protected)
    except ValueError:
        return lines
    if keys is None and keys_dir is not None and kid is not None:
        keys = keys_from_gateway(keys_dir, kid)
        if keys is None:
            lines.append(f"  no key folder at the gateway has kid {kid.hex()}")
    if keys is None:
        lines.append("  (give --secret and --salt, or --gateway-config, to decrypt)")
        return lines
    context = oscore.SecurityContext(
        keys.secret, keys.gateway_id, keys.kid, keys.salt, keys.id_context
    )
    try:
        plain, _ = context.unprotect_request(data)
    except ValueError as exc:
        lines.append(f"  decryption failed: {type(exc).__name__}: {exc}")
        return lines
    inner = coap.decode(plain)
    lines.append("  decrypted:")
    lines += describe_message(inner, "    ")
    if inner.payload:
        lines.append(f"    payload {len(inner.payload)} bytes:")
        lines += describe_cbor(inner.payload, "      ")
    return lines
