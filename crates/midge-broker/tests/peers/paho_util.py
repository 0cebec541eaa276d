"""Shared helpers for the paho-mqtt 2.x interop scripts.

Every script takes the broker port and a protocol version ("311" or "5") as arguments, prints
one JSON line with what it saw, and exits non-zero on failure. Every wait is bounded.
"""

import json
import os
import queue
import ssl
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

TIMEOUT = 5.0


def args():
    """(port, protocol, tag): tag makes topics and client ids unique per run."""
    if len(sys.argv) < 2:
        fail("usage: %s PORT [311|5]" % sys.argv[0])
    port = int(sys.argv[1])
    version = sys.argv[2] if len(sys.argv) > 2 else "5"
    proto = {"311": mqtt.MQTTv311, "5": mqtt.MQTTv5}.get(version)
    if proto is None:
        fail("unknown version %r" % version)
    tag = "%s-%d" % (version, os.getpid())
    return port, proto, tag


def fail(message, **extra):
    extra["ok"] = False
    extra["error"] = message
    print(json.dumps(extra), flush=True)
    sys.exit(1)


def check(condition, message, **extra):
    if not condition:
        fail(message, **extra)


def done(**result):
    result["ok"] = True
    print(json.dumps(result), flush=True)
    sys.exit(0)


def props(packet_type, **values):
    p = Properties(packet_type)
    for k, v in values.items():
        setattr(p, k, v)
    return p


class Client:
    """A paho client on its own network thread, with queues for what it receives."""

    def __init__(
        self,
        port,
        proto,
        client_id="",
        clean=True,
        session_expiry=None,
        will=None,
        transport="tcp",
        ws_path=None,
        ca=None,
        alpn=None,
    ):
        """transport "tcp" or "websockets" (at ws_path); ca: TLS with that CA's PEM file,
        offering the ALPN protocols alpn (a list) if given."""
        self.proto = proto
        self.port = port
        self.clean = clean
        self.session_expiry = session_expiry
        kwargs = {}
        if proto != mqtt.MQTTv5:
            kwargs["clean_session"] = clean
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=proto,
            transport=transport,
            **kwargs,
        )
        if ws_path is not None:
            self.c.ws_set_options(path=ws_path)
        if ca is not None and alpn is not None:
            context = ssl.create_default_context(cafile=ca)
            context.set_alpn_protocols(alpn)
            self.c.tls_set_context(context)
        elif ca is not None:
            self.c.tls_set(ca_certs=ca)
        self.messages = queue.Queue()
        self.connacks = queue.Queue()
        self.subacks = queue.Queue()
        self.c.on_connect = lambda c, u, flags, rc, p: self.connacks.put((flags, rc, p))
        self.c.on_message = lambda c, u, msg: self.messages.put(msg)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put((mid, rcs))
        if will is not None:
            self.c.will_set(**will)

    def connect(self):
        """Connects and returns (session_present, CONNACK properties)."""
        if self.proto == mqtt.MQTTv5:
            p = None
            if self.session_expiry is not None:
                p = props(PacketTypes.CONNECT, SessionExpiryInterval=self.session_expiry)
            self.c.connect("127.0.0.1", self.port, 30, clean_start=self.clean, properties=p)
        else:
            self.c.connect("127.0.0.1", self.port, 30)
        self.c.loop_start()
        try:
            flags, rc, p = self.connacks.get(timeout=TIMEOUT)
        except queue.Empty:
            fail("no CONNACK within %ss" % TIMEOUT)
        check(not rc.is_failure, "CONNECT refused: %s" % rc)
        return flags.session_present, p

    def subscribe(self, topic, qos):
        rc, mid = self.c.subscribe(topic, qos)
        check(rc == mqtt.MQTT_ERR_SUCCESS, "subscribe failed: %s" % rc)
        try:
            got_mid, codes = self.subacks.get(timeout=TIMEOUT)
        except queue.Empty:
            fail("no SUBACK for %s" % topic)
        check(got_mid == mid, "SUBACK for another SUBSCRIBE")
        check(all(not c.is_failure for c in codes), "SUBSCRIBE %s refused: %s" % (topic, codes))

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        info = self.c.publish(topic, payload, qos, retain, properties)
        check(info.rc == mqtt.MQTT_ERR_SUCCESS, "publish failed: %s" % info.rc)
        info.wait_for_publish(TIMEOUT)
        check(info.is_published(), "publish to %s not acknowledged within %ss" % (topic, TIMEOUT))

    def expect(self, n, timeout=TIMEOUT):
        """Exactly the next n messages, or fail."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                fail("got %d of %d messages" % (len(out), n), got=[m.payload.decode() for m in out])
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                pass
        return out

    def expect_none(self, wait):
        try:
            m = self.messages.get(timeout=wait)
        except queue.Empty:
            return
        fail("unexpected message on %s: %r" % (m.topic, m.payload))

    def disconnect(self):
        self.c.disconnect()
        self.c.loop_stop()

    def drop(self):
        """Closes the socket without DISCONNECT, as a crashed client would."""
        self.c.loop_stop()
        sock = self.c.socket()
        if sock is not None:
            sock.close()
