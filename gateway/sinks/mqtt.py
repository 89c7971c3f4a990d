"""MQTT upstream: one QoS 1 PUBLISH per reading on `city/<site>/<kind>/<node>`.

Delivery means the broker's PUBACK arrived, nothing less. MQTT 5 is used because its PUBACK
carries a reason code: under MQTT 3.1.1 a broker that refuses a topic (an ACL) still acks and
drops the message silently, which would lose readings while reporting them delivered.

paho-mqtt runs its network loop in its own thread. Its PUBACK callback only appends to a list
under a lock of our own (never held while calling into paho, which calls `on_publish` with its
own message mutex held) and wakes the event loop once, when the last ack of the batch is in;
connection events are handed over with `call_soon_threadsafe`. Everything else happens on the
event loop. Readings are mapped and published one by one, so the JSON work overlaps with the
broker's acks for the earlier ones.

One paho client lives for one connection: when the connection drops, pending acks are given up
and the client is thrown away, and the next `send` connects afresh. paho's own reconnect and
resend are off, so nothing is sent behind the forwarder's back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.client import ConnectFlags, DisconnectFlags
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.config import GatewayConfig
from gateway.records import Reading
from gateway.sinks.base import SendResult, SinkUnavailable
from gateway.sinks.entities import MappingError, check_name, mqtt_topic, reading_json

log = logging.getLogger(__name__)

# CONNACK reason codes that mean "your credentials are wrong", not "try again later".
_AUTH_REFUSED = {0x86: "bad user name or password", 0x87: "not authorized"}
# PUBACK reason codes that condemn the message itself; any other failure is retried.
_POISON = {0x90: "topic name invalid", 0x99: "payload format invalid"}
_NOT_AUTHORIZED = 0x87


class MQTTAuthError(SinkUnavailable):
    """The broker refused our credentials or the topic: a configuration problem, logged loudly.

    A SinkUnavailable all the same, so the forwarder keeps the readings and retries: fixing
    the account on the broker side must not require a gateway restart or lose data.
    """


class MQTTSink:
    """Publish readings to an MQTT broker with QoS 1, optionally over TLS with a password."""

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        site: str = "site",
        topic_prefix: str = "city",
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_file: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        client_id: str | None = None,
        keepalive: int = 30,
        connect_timeout: float = 5.0,
        ack_timeout: float = 10.0,
        max_inflight: int = 100,
        max_batch: int = 500,
        name: str = "mqtt",
    ) -> None:
        self.name = name
        self.max_batch = max_batch
        self.host = host
        self.port = port
        self.site = check_name("site", site)
        self.topic_prefix = topic_prefix
        self.username = username
        self.password = password
        self.tls = tls or ca_file is not None or cert_file is not None
        self.ca_file = os.fspath(ca_file) if ca_file is not None else None
        self.cert_file = os.fspath(cert_file) if cert_file is not None else None
        self.key_file = os.fspath(key_file) if key_file is not None else None
        self.client_id = client_id or f"city-gw-{site}-{uuid.uuid4().hex[:8]}"
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.ack_timeout = ack_timeout
        self.max_inflight = max_inflight
        self._inflight = max_inflight  # lowered to the broker's Receive Maximum if need be
        self._receive_maximum = 65535
        # PUBACKs of the batch in flight, collected by paho's thread; it wakes the event loop
        # once, when the last one expected arrives (a wake-up per ack costs half the rate).
        self._ack_lock = threading.Lock()
        self._acks: list[tuple[int, ReasonCode]] = []
        self._awaiting = 0
        self._client: paho.Client | None = None
        self._connected = False
        self._connack: asyncio.Future[None] | None = None
        self._pending: dict[int, str] = {}  # message id -> reading id, of the batch in flight
        self._refusal: str | None = None
        self._settled = asyncio.Event()
        self._send_lock = asyncio.Lock()

    @property
    def endpoint(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    async def start(self) -> None:
        """Connect once, so a wrong password shows in the log at start.

        Never fatal: the gateway must keep taking readings from its nodes whatever the city
        broker says; `send` raises (MQTTAuthError or SinkUnavailable) and the forwarder keeps
        the readings until the broker or its account is fixed.
        """
        try:
            await self._connect()
        except MQTTAuthError as exc:
            log.error("%s", exc)
        except SinkUnavailable as exc:
            log.warning("%s: %s; will retry when readings are sent", self.name, exc)

    async def close(self) -> None:
        async with self._send_lock:
            await self._drop(graceful=True)

    async def send(self, batch: Sequence[Reading]) -> SendResult:
        async with self._send_lock:
            return await self._send(batch)

    async def _send(self, batch: Sequence[Reading]) -> SendResult:
        result = SendResult()
        if not batch:
            return result
        if not self._connected:
            await self._connect()
        client = self._client
        assert client is not None
        self._pending = {}
        self._refusal = None
        self._settled.clear()
        with self._ack_lock:
            self._acks = []
            self._awaiting = len(batch)
        # Map and publish one reading at a time: the JSON work of the next readings overlaps
        # with the window of earlier ones travelling to the broker and back.
        published = 0
        lost = False
        for reading in batch:
            try:
                topic = mqtt_topic(self.topic_prefix, self.site, reading)
                payload = reading_json(reading, self.site)
            except MappingError as exc:
                result.rejected[reading.reading_id] = str(exc)
                continue
            info = client.publish(topic, payload, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                lost = True  # the connection went while publishing; the rest waits
                break
            self._pending[info.mid] = reading.reading_id
            published += 1
            if published % 200 == 0:
                await asyncio.sleep(0)  # let the links' traffic in during a long batch
        with self._ack_lock:
            self._awaiting -= len(batch) - published
            if self._awaiting == 0:
                self._settled.set()
        if published and self._connected:
            try:
                await asyncio.wait_for(self._settled.wait(), self.ack_timeout)
            except TimeoutError:
                lost = True
        with self._ack_lock:
            acks, self._acks = self._acks, []
            self._awaiting = 0
        for mid, rc in acks:
            self._on_puback(result, mid, rc)
        if self._pending:
            if not lost and self._connected:
                log.warning(
                    "%s: %d PUBACKs missing after %.1f s; reconnecting",
                    self.name,
                    len(self._pending),
                    self.ack_timeout,
                )
            lost = True
        if lost:
            await self._drop(graceful=False)
        self._pending = {}
        if self._refusal and not result.delivered:
            raise MQTTAuthError(self._refusal)
        if not result.delivered and not result.rejected and lost:
            raise SinkUnavailable(f"{self.name}: connection to {self.endpoint} lost, no PUBACK")
        return result

    # ---- connection -----------------------------------------------------------------------

    async def _connect(self) -> None:
        await self._open()
        if self._receive_maximum < self._inflight:
            # The broker takes fewer unacknowledged messages than we would send (MQTT 5
            # Receive Maximum; exceeding it is a protocol error). paho cannot change the window
            # on an open connection: reconnect once with the broker's number, kept from now on.
            log.info(
                "%s: %s accepts %d messages in flight; using that",
                self.name,
                self.endpoint,
                self._receive_maximum,
            )
            self._inflight = self._receive_maximum
            await self._open()
        log.info("%s: connected to %s as %s", self.name, self.endpoint, self.client_id)

    async def _open(self) -> None:
        await self._drop(graceful=True)
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=False,
        )
        client.connect_timeout = self.connect_timeout
        client.max_inflight_messages_set(self._inflight)
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set(ca_certs=self.ca_file, certfile=self.cert_file, keyfile=self.key_file)

        def on_connect(
            c: paho.Client, u: Any, f: ConnectFlags, rc: ReasonCode, props: Properties | None
        ) -> None:
            _notify(loop, self._on_connack, c, rc, props)

        def on_disconnect(
            c: paho.Client, u: Any, f: DisconnectFlags, rc: ReasonCode, props: Properties | None
        ) -> None:
            _notify(loop, self._on_lost, c, rc)

        def on_publish(c: paho.Client, u: Any, mid: int, rc: ReasonCode, props: Properties) -> None:
            if c is not self._client:
                return
            with self._ack_lock:
                self._acks.append((mid, rc))
                self._awaiting -= 1
                last = self._awaiting == 0
            if last:
                _notify(loop, self._settled.set)

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        self._client = client
        try:
            # Blocking: TCP connect and the TLS handshake (certificate errors surface here).
            await asyncio.to_thread(client.connect, self.host, self.port, self.keepalive)
        except (OSError, ValueError) as exc:
            self._client = None
            raise SinkUnavailable(f"{self.name}: cannot reach {self.endpoint}: {exc}") from exc
        client.loop_start()
        try:
            await asyncio.wait_for(asyncio.shield(self._connack), self.connect_timeout)
        except TimeoutError:
            await self._drop(graceful=False)
            raise SinkUnavailable(f"{self.name}: no CONNACK from {self.endpoint}") from None
        except SinkUnavailable:
            await self._drop(graceful=False)
            raise

    async def _drop(self, graceful: bool) -> None:
        client, self._client = self._client, None
        self._connected = False
        if client is None:
            return
        sock = client.socket()
        if graceful or sock is None:
            client.disconnect()
        else:
            # A broker that stopped acking may not read a DISCONNECT either: shut the TCP
            # socket (beneath any TLS layer) so the network thread sees the loss and ends.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(cast(socket.socket, sock), socket.SHUT_RDWR)
        await asyncio.to_thread(client.loop_stop)

    # ---- paho events, delivered on the event loop -----------------------------------------

    def _on_connack(self, client: paho.Client, rc: ReasonCode, props: Any) -> None:
        if client is not self._client or self._connack is None or self._connack.done():
            return
        if rc.is_failure:
            reason = _AUTH_REFUSED.get(rc.value)
            if reason:
                self._connack.set_exception(
                    MQTTAuthError(
                        f"{self.name}: {self.endpoint} refused the connection ({reason}): "
                        f"check the username and password configured for this sink"
                    )
                )
            else:
                self._connack.set_exception(
                    SinkUnavailable(f"{self.name}: {self.endpoint} refused the connection: {rc}")
                )
            return
        # Absent means 65535 (MQTT 5, 3.2.2.3.3).
        self._receive_maximum = int(getattr(props, "ReceiveMaximum", 65535))
        self._connected = True
        self._connack.set_result(None)

    def _on_lost(self, client: paho.Client, rc: ReasonCode) -> None:
        if client is not self._client:
            return
        if self._connected:
            log.warning("%s: connection to %s lost: %s", self.name, self.endpoint, rc)
        self._connected = False
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(
                SinkUnavailable(f"{self.name}: {self.endpoint} closed the connection: {rc}")
            )
        self._settled.set()

    def _on_puback(self, result: SendResult, mid: int, rc: ReasonCode) -> None:
        reading_id = self._pending.pop(mid, None)
        if reading_id is None:
            return
        if not rc.is_failure:  # includes 0x10 "no matching subscribers": the broker has it
            result.delivered.add(reading_id)
        elif rc.value in _POISON:
            result.rejected[reading_id] = f"broker refused it: {_POISON[rc.value]}"
        elif rc.value == _NOT_AUTHORIZED:
            self._refusal = (
                f"{self.name}: {self.endpoint} does not authorize publishing under "
                f"{self.topic_prefix}/{self.site}/: check the broker's ACL for this account"
            )
            log.error("%s", self._refusal)
        else:
            log.warning("%s: broker refused a message (%s); will retry", self.name, rc)


def _notify(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    """Hand a paho event to the event loop, unless that loop is gone (a sink never closed)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def from_config(config: GatewayConfig) -> MQTTSink:
    """The `[sinks.mqtt]` section as a sink; the password is read from its file here."""
    section = config.sinks.mqtt
    password = None
    if section.password_file is not None:
        # The first line only: editors and `echo` leave a trailing newline.
        password = section.password_file.read_text().splitlines()[0]
    return MQTTSink(
        section.host,
        section.port,
        site=config.site_id,
        topic_prefix=section.topic_prefix,
        username=section.username,
        password=password,
        tls=section.tls,
        ca_file=section.ca_file,
        client_id=section.client_id,
        keepalive=section.keepalive_s,
    )
