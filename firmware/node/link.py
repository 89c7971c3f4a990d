# What both links share (node/coaplink.py over UDP, node/loralink.py in LoRa frames): the
# errors the runtime catches, the CoAP POST that carries an uplink, and reading the gateway's
# verified answer. Its own small module so a LoRa node never loads the UDP client.

from protocol import coap


class LinkDown(Exception):
    """No answer (or no network): the records stay in the node's buffer."""


class Refused(Exception):
    """The gateway answered with an error code; `code` says which."""

    def __init__(self, code):
        super().__init__("gateway answered " + coap.code_text(code))
        self.code = code


def request(mids, mtype, path, payload, token_len=4):
    """A plain CoAP POST of a CBOR payload to `path` (before OSCORE)."""
    options = coap.uri_path_options(path)
    options.append((coap.CONTENT_FORMAT, coap.uint_bytes(coap.FORMAT_CBOR)))
    token = coap.new_token(token_len)
    return coap.Message(mtype, coap.POST, mids.next(), token, options, payload)


def finish(plain):
    """The gateway's verified response -> its payload (downlinks) or Refused."""
    response = coap.decode(plain)
    if response.code >> 5 != 2:
        raise Refused(response.code)
    return response.payload
