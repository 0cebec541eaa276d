#!/usr/bin/env python3
"""Capture raw client->server MQTT packets from real clients as test fixtures.

Why: midge-codec's unit tests are written by us against our reading of the
spec. Packets produced by independent, widely used implementations
(libmosquitto via mosquitto_pub/mosquitto_sub, and Eclipse paho-mqtt for
Python) catch the cases where our reading and the real world disagree
(property ordering, optional fields, flag combinations, short-form acks...).

How: a tiny fake broker on 127.0.0.1 (ephemeral port) accepts one TCP
connection per client run, splits the byte stream into MQTT packets using the
fixed header + Remaining Length varint, records each packet's exact bytes,
and answers just enough for the client to run to completion. Each run is
written to tests/fixtures/<name>.hex as:

    # comment lines (tool, version, command, protocol, date)
    <PACKET_TYPE_NAME> <lowercase hex of the whole raw packet>

Only the client->server direction is recorded; the broker's replies are
fixed, documented below, and can be reconstructed from the code.

Requirements: Python 3.11+, paho-mqtt 2.x, mosquitto-clients 2.x.
Regenerate from the repository root with:

    python3 crates/midge-codec/tests/capture_fixtures.py

Only the `# date:` line (and tool-version lines, if the tools change)
should differ between regenerations; everything else is deterministic
because client ids, keepalives and all packet contents are pinned, and the
fake broker gates every server->client message on the client's previous
packet so the interleaving never depends on timing.
"""

from __future__ import annotations

import datetime
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

HOST = "127.0.0.1"
FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures"
# Generous per-run timeout: mosquitto_sub's keepalive run needs ~5 s.
RUN_TIMEOUT = 15.0

PACKET_NAMES = {
    1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC",
    6: "PUBREL", 7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK",
    10: "UNSUBSCRIBE", 11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP",
    14: "DISCONNECT", 15: "AUTH",
}

PROTOCOL_DESC = {3: "MQTT 3.1 (protocol name MQIsdp, level 3)",
                 4: "MQTT 3.1.1 (level 4)",
                 5: "MQTT 5.0 (level 5)"}


# --------------------------------------------------------------------------
# Minimal wire helpers (deliberately independent of paho's encoder, so the
# fake broker does not share bugs with one of the clients under test).
# --------------------------------------------------------------------------

def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def decode_varint(buf: bytes, pos: int) -> tuple[int, int] | None:
    """Return (value, new_pos), or None if buf ends mid-varint."""
    mult, value = 1, 0
    for i in range(4):
        if pos + i >= len(buf):
            return None
        b = buf[pos + i]
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, pos + i + 1
        mult *= 128
    raise ValueError("malformed Remaining Length (more than 4 bytes)")


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + encode_varint(len(body)) + body


def read_str16(buf: bytes, pos: int) -> tuple[bytes, int]:
    n = int.from_bytes(buf[pos:pos + 2], "big")
    return buf[pos + 2:pos + 2 + n], pos + 2 + n


def split_packet(raw: bytes) -> tuple[int, int, bytes]:
    """Return (packet type, flags nibble, variable header + payload)."""
    _, body_start = decode_varint(raw, 1)
    return raw[0] >> 4, raw[0] & 0x0F, raw[body_start:]


# --------------------------------------------------------------------------
# Fake broker
# --------------------------------------------------------------------------

@dataclass
class BrokerScript:
    """What the fake broker does beyond the mandatory acks.

    `connack_v5_props` lets one run advertise capabilities (paho v5 uses a
    Topic Alias, which is only legal if the server's CONNACK allowed it).
    `publishes` are sent to the client once `publish_trigger` packet type is
    received (e.g. after the SUBACK went out, or only after a PINGREQ so a
    keepalive run is forced to ping before it can finish).
    """
    connack_v5_props: bytes = b""
    publishes: list[tuple[int, str, bytes]] = field(default_factory=list)  # (qos, topic, payload)
    publish_trigger: str = "SUBSCRIBE"


class FakeBroker:
    """Accepts exactly one connection and records every client packet."""

    def __init__(self, script: BrokerScript | None = None):
        self.script = script or BrokerScript()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(1)
        self.sock.settimeout(RUN_TIMEOUT)
        self.port = self.sock.getsockname()[1]
        self.packets: list[bytes] = []
        self.leftover = b""
        self.error: BaseException | None = None
        self.level = 4
        self._next_pid = 1
        self._published = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    # -- public API for drivers --------------------------------------------

    def wait_for(self, type_name: str, count: int = 1, timeout: float = 5.0) -> None:
        """Block until the client has sent `count` packets of `type_name`.

        Used by the paho driver to serialise its actions against the
        broker-initiated flows so the fixture's packet order is stable.
        """
        def seen() -> int:
            return sum(1 for p in self.packets if PACKET_NAMES[p[0] >> 4] == type_name)
        with self._cond:
            if not self._cond.wait_for(lambda: seen() >= count, timeout):
                raise TimeoutError(f"client never sent {count}x {type_name}")

    def finish(self, timeout: float = RUN_TIMEOUT) -> list[bytes]:
        self._thread.join(timeout)
        self.sock.close()
        if self._thread.is_alive():
            raise TimeoutError("broker session did not end (client kept the connection open)")
        if self.error:
            raise self.error
        if self.leftover:
            raise ValueError(f"client closed mid-packet, {len(self.leftover)} bytes left over")
        return self.packets

    # -- session -----------------------------------------------------------

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(RUN_TIMEOUT)
                buf = b""
                while True:
                    try:
                        data = conn.recv(65536)
                    except (ConnectionResetError, socket.timeout):
                        data = b""
                    if not data:
                        self.leftover = buf
                        return
                    buf += data
                    # A single recv may hold several packets or a partial one.
                    while True:
                        hdr = decode_varint(buf, 1) if len(buf) >= 2 else None
                        if hdr is None or len(buf) < hdr[1] + hdr[0]:
                            break
                        total = hdr[1] + hdr[0]
                        raw, buf = buf[:total], buf[total:]
                        with self._cond:
                            self.packets.append(raw)
                            self._cond.notify_all()
                        for reply in self._respond(raw):
                            conn.sendall(reply)
        except BaseException as e:  # surfaced by finish()
            self.error = e

    def _respond(self, raw: bytes) -> list[bytes]:
        ptype, flags, body = split_packet(raw)
        name = PACKET_NAMES[ptype]
        v5 = self.level == 5
        out: list[bytes] = []

        if name == "CONNECT":
            _, pos = read_str16(body, 0)          # protocol name
            self.level = body[pos]
            if self.level == 5:
                props = self.script.connack_v5_props
                # flags=0 (no session present), reason=0, then properties.
                out.append(packet(0x20, b"\x00\x00" + encode_varint(len(props)) + props))
            else:
                out.append(packet(0x20, b"\x00\x00"))
        elif name == "SUBSCRIBE":
            pid = body[:2]
            pos = 2
            if v5:
                plen, pos = decode_varint(body, pos)
                pos += plen
            granted = bytearray()
            while pos < len(body):
                _, pos = read_str16(body, pos)
                granted.append(body[pos] & 0x03)  # grant exactly the requested QoS
                pos += 1
            out.append(packet(0x90, pid + (b"\x00" if v5 else b"") + bytes(granted)))
        elif name == "UNSUBSCRIBE":
            pid = body[:2]
            if v5:
                # v5 UNSUBACK carries one reason code per filter; count them.
                plen, pos = decode_varint(body, 2)
                pos += plen
                n = 0
                while pos < len(body):
                    _, pos = read_str16(body, pos)
                    n += 1
                out.append(packet(0xB0, pid + b"\x00" + b"\x00" * n))
            else:
                out.append(packet(0xB0, pid))
        elif name == "PUBLISH":
            qos = (flags >> 1) & 0x03
            if qos:
                _, pos = read_str16(body, 0)
                pid = body[pos:pos + 2]
                # Short (2-byte) acks: valid in every version; in v5 an
                # omitted reason code means Success.
                out.append(packet(0x40 if qos == 1 else 0x50, pid))
        elif name == "PUBREL":
            out.append(packet(0x70, body[:2]))       # PUBCOMP
        elif name == "PUBREC":
            out.append(packet(0x62, body[:2]))       # PUBREL for our own QoS 2 PUBLISH
        elif name == "PINGREQ":
            out.append(b"\xd0\x00")

        if name == self.script.publish_trigger and not self._published:
            self._published = True
            for qos, topic, payload in self.script.publishes:
                t = topic.encode()
                vh = len(t).to_bytes(2, "big") + t
                if qos:
                    vh += self._next_pid.to_bytes(2, "big")
                    self._next_pid += 1
                if v5:
                    vh += b"\x00"                      # no properties
                out.append(packet(0x30 | (qos << 1), vh + payload))
        return out


# --------------------------------------------------------------------------
# Fixture output
# --------------------------------------------------------------------------

def write_fixture(name: str, header: dict[str, str], packets: list[bytes]) -> None:
    lines = [f"# {k}: {v}" for k, v in header.items()]
    lines.append("# direction: client -> server, in the order sent")
    lines.append("# format: <PACKET_TYPE_NAME> <lowercase hex of the whole raw packet>")
    for raw in packets:
        lines.append(f"{PACKET_NAMES[raw[0] >> 4]} {raw.hex()}")
    path = FIXTURE_DIR / f"{name}.hex"
    path.write_text("\n".join(lines) + "\n")
    kinds = " ".join(PACKET_NAMES[p[0] >> 4] for p in packets)
    print(f"wrote {path.relative_to(FIXTURE_DIR.parent.parent.parent.parent)}: {kinds}")


def protocol_of(packets: list[bytes]) -> str:
    _, _, body = split_packet(packets[0])
    _, pos = read_str16(body, 0)
    return PROTOCOL_DESC.get(body[pos], f"level {body[pos]}")


TODAY = datetime.date.today().isoformat()


# --------------------------------------------------------------------------
# mosquitto_pub / mosquitto_sub
# --------------------------------------------------------------------------

def mosquitto_version(tool: str) -> str:
    # `--help | head -1` is only a description line in 2.x; the version is
    # on the line that contains "version".
    text = subprocess.run([tool, "--help"], capture_output=True, text=True).stdout
    return next((l.strip() for l in text.splitlines() if " version " in l), text.splitlines()[0])


# An empty HOME/XDG_CONFIG_HOME so a developer's ~/.config/mosquitto_pub
# options file cannot leak extra flags into the capture.
# (TemporaryDirectory removes itself when the interpreter exits.)
_EMPTY_HOME_DIR = tempfile.TemporaryDirectory(prefix="midge-fixtures-")
_EMPTY_HOME = _EMPTY_HOME_DIR.name
_CLIENT_ENV = {**os.environ, "HOME": _EMPTY_HOME, "XDG_CONFIG_HOME": _EMPTY_HOME}


def run_mosquitto(name: str, argv: list[str], script: BrokerScript | None = None) -> None:
    broker = FakeBroker(script)
    full = [argv[0], "-h", HOST, "-p", str(broker.port)] + argv[1:]
    proc = subprocess.run(full, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=_CLIENT_ENV)
    packets = broker.finish()
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: {argv[0]} exited {proc.returncode}: {proc.stderr.strip()}")
    shown = [argv[0], "-h", HOST, "-p", "<PORT>"] + argv[1:]
    write_fixture(name, {
        "tool": argv[0],
        "version": mosquitto_version(argv[0]),
        # shlex quotes "<PORT>"; drop those quotes, the port is not in any packet.
        "command": shlex.join(shown).replace("'<PORT>'", "<PORT>"),
        "protocol": protocol_of(packets),
        "date": TODAY,
    }, packets)


PUB_COMMON = [
    "-i", "fixture-pub", "-t", "midge/fixture/temp", "-m", "21.5", "-r",
    "-u", "user", "-P", "pass",
    "--will-topic", "midge/fixture/will", "--will-payload", "gone",
    "--will-qos", "1", "--will-retain",
]

# Every property mosquitto_pub's man page lists for CONNECT/PUBLISH/WILL/
# DISCONNECT that is meaningful without server cooperation (topic-alias is
# left out: the fake CONNACK grants no Topic Alias Maximum; auth-* would
# start an AUTH exchange the fake broker does not implement).
PUB_V5_PROPS = [
    "-D", "connect", "session-expiry-interval", "60",
    "-D", "connect", "receive-maximum", "20",
    "-D", "connect", "maximum-packet-size", "65536",
    "-D", "connect", "topic-alias-maximum", "5",
    "-D", "connect", "request-problem-information", "1",
    "-D", "connect", "request-response-information", "1",
    "-D", "connect", "user-property", "ck", "cv",
    "-D", "will", "will-delay-interval", "10",
    "-D", "will", "content-type", "text/plain",
    "-D", "will", "user-property", "wk", "wv",
    "-D", "publish", "user-property", "k", "v",
    "-D", "publish", "message-expiry-interval", "30",
    "-D", "publish", "content-type", "text/plain",
    "-D", "publish", "response-topic", "resp/topic",
    "-D", "publish", "correlation-data", "corr-1",
    "-D", "publish", "payload-format-indicator", "1",
    "-D", "disconnect", "user-property", "dk", "dv",
]

SUB_COMMON = ["-i", "fixture-sub", "-t", "midge/+/temp", "-t", "midge/#", "-q", "2", "-C", "1", "-W", "5"]
# A QoS 2 message makes mosquitto_sub go through PUBREC/PUBCOMP before -C 1
# lets it exit (libmosquitto delivers inbound QoS 2 on PUBREL).
SUB_SCRIPT = BrokerScript(publishes=[(2, "midge/fixture/temp", b"21.5")])


def capture_mosquitto() -> None:
    run_mosquitto("mosquitto_pub_v31", ["mosquitto_pub", "-V", "mqttv31", "-q", "1"] + PUB_COMMON)
    run_mosquitto("mosquitto_pub_v311", ["mosquitto_pub", "-V", "mqttv311", "-q", "1"] + PUB_COMMON)
    run_mosquitto("mosquitto_pub_v311_qos2", ["mosquitto_pub", "-V", "mqttv311", "-q", "2"] + PUB_COMMON)
    run_mosquitto("mosquitto_pub_v5", ["mosquitto_pub", "-V", "mqttv5", "-q", "1"] + PUB_COMMON + PUB_V5_PROPS)
    run_mosquitto("mosquitto_pub_v5_qos2", ["mosquitto_pub", "-V", "mqttv5", "-q", "2"] + PUB_COMMON + PUB_V5_PROPS)

    run_mosquitto("mosquitto_sub_v311", ["mosquitto_sub", "-V", "mqttv311"] + SUB_COMMON, SUB_SCRIPT)
    # mosquitto_sub 2.0.x has no CLI flags for No Local / Retain As Published
    # / Retain Handling; -U adds an UNSUBSCRIBE right after the SUBSCRIBE.
    run_mosquitto("mosquitto_sub_v5", ["mosquitto_sub", "-V", "mqttv5"] + SUB_COMMON + [
        "-U", "midge/old/topic",
        "-x", "120",
        "-D", "connect", "user-property", "ck", "cv",
        "-D", "subscribe", "user-property", "a", "b",
        "-D", "unsubscribe", "user-property", "u", "v",
        "-D", "disconnect", "user-property", "dk", "dv",
    ], SUB_SCRIPT)
    # Keepalive: the broker withholds the message until the client pings,
    # so the fixture is guaranteed to contain a PINGREQ (5 s is the minimum
    # keepalive mosquitto_sub accepts).
    run_mosquitto("mosquitto_sub_v311_keepalive",
                  ["mosquitto_sub", "-V", "mqttv311", "-k", "5", "-i", "fixture-sub-ka",
                   "-t", "midge/#", "-q", "1", "-C", "1", "-W", "12"],
                  BrokerScript(publishes=[(1, "midge/fixture/temp", b"21.5")], publish_trigger="PINGREQ"))


# --------------------------------------------------------------------------
# paho-mqtt
# --------------------------------------------------------------------------

def run_paho(name: str, protocol: int) -> None:
    v5 = protocol == mqtt.MQTTv5
    # Topic Alias Maximum = 10 (property 0x22) so the v5 alias publish below
    # is legal; broker sends one QoS 1 and one QoS 2 message after SUBACK so
    # paho's PUBACK / PUBREC / PUBCOMP are captured too.
    broker = FakeBroker(BrokerScript(
        connack_v5_props=b"\x22\x00\x0a",
        publishes=[(1, "midge/fixture/temp", b"21.5"), (2, "midge/fixture/temp", b"22.0")],
    ))
    summary: list[str] = []

    def step(text: str) -> None:
        summary.append(text)

    connected, subscribed, unsubscribed = threading.Event(), threading.Event(), threading.Event()
    # Fixed client id: paho would otherwise generate a random one.
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fixture-paho", protocol=protocol)
    c.on_connect = lambda *a: connected.set()
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_unsubscribe = lambda *a: unsubscribed.set()

    c.username_pw_set("user", "pass")
    step('username_pw_set("user", "pass")')
    will_props = None
    if v5:
        will_props = Properties(PacketTypes.WILLMESSAGE)
        will_props.WillDelayInterval = 10
        will_props.ContentType = "text/plain"
        will_props.UserProperty = ("wk", "wv")
        step("will properties: WillDelayInterval=10 ContentType=text/plain UserProperty=(wk,wv)")
    c.will_set("midge/fixture/will", b"gone", qos=1, retain=True, properties=will_props)
    step('will_set("midge/fixture/will", b"gone", qos=1, retain=True)')

    if v5:
        cp = Properties(PacketTypes.CONNECT)
        cp.SessionExpiryInterval = 60
        cp.ReceiveMaximum = 20
        cp.UserProperty = ("ck", "cv")
        c.connect(HOST, broker.port, keepalive=60, clean_start=True, properties=cp)
        step("connect(keepalive=60, clean_start=True, SessionExpiryInterval=60 ReceiveMaximum=20 UserProperty=(ck,cv))")
    else:
        c.connect(HOST, broker.port, keepalive=60)
        step("connect(keepalive=60)  # clean_session defaults to True")
    c.loop_start()
    try:
        if not connected.wait(5):
            raise TimeoutError("paho: no CONNACK")

        if v5:
            sp = Properties(PacketTypes.SUBSCRIBE)
            sp.SubscriptionIdentifier = 42
            sp.UserProperty = ("a", "b")
            c.subscribe([
                ("midge/+/temp", SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True,
                                                  retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)),
                ("midge/#", SubscribeOptions(qos=2, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)),
            ], properties=sp)
            step("subscribe([midge/+/temp qos1 noLocal retainAsPublished rh=1, midge/# qos2 rh=2], "
                 "SubscriptionIdentifier=42 UserProperty=(a,b))")
        else:
            c.subscribe([("midge/+/temp", 1), ("midge/#", 2)])
            step("subscribe([(midge/+/temp, 1), (midge/#, 2)])")
        if not subscribed.wait(5):
            raise TimeoutError("paho: no SUBACK")
        # Let the broker-initiated QoS 1 / QoS 2 deliveries finish before we
        # publish, so the acks never interleave with our own PUBLISHes.
        broker.wait_for("PUBACK")
        broker.wait_for("PUBCOMP")
        step("<- broker sends PUBLISH qos1 + qos2; paho acks with PUBACK, PUBREC, PUBCOMP")

        pp = None
        if v5:
            pp = Properties(PacketTypes.PUBLISH)
            pp.PayloadFormatIndicator = 1
            pp.MessageExpiryInterval = 30
            pp.ContentType = "text/plain"
            pp.ResponseTopic = "resp/topic"
            pp.CorrelationData = b"\x00\x01corr"
            pp.UserProperty = [("k", "v"), ("k2", "v2")]
        c.publish("midge/fixture/temp", b"20.0", qos=0).wait_for_publish(5)
        step('publish("midge/fixture/temp", b"20.0", qos=0)')
        c.publish("midge/fixture/temp", b"21.5", qos=1, retain=True, properties=pp).wait_for_publish(5)
        step('publish("midge/fixture/temp", b"21.5", qos=1, retain=True'
             + (", PayloadFormatIndicator=1 MessageExpiryInterval=30 ContentType=text/plain "
                "ResponseTopic=resp/topic CorrelationData=00 01 'corr' UserProperty=[(k,v),(k2,v2)])" if v5 else ")"))
        c.publish("midge/fixture/temp", b"23.0", qos=2, properties=pp).wait_for_publish(5)
        step('publish("midge/fixture/temp", b"23.0", qos=2' + (", same properties)" if v5 else ")"))
        if v5:
            # Establish alias 1, then use it with an empty topic name.
            ap = Properties(PacketTypes.PUBLISH)
            ap.TopicAlias = 1
            c.publish("midge/alias/topic", b"a1", qos=1, properties=ap).wait_for_publish(5)
            c.publish("", b"a2", qos=0, properties=ap).wait_for_publish(5)
            step('publish("midge/alias/topic", b"a1", qos=1, TopicAlias=1); publish("", b"a2", qos=0, TopicAlias=1)')

        up = None
        if v5:
            up = Properties(PacketTypes.UNSUBSCRIBE)
            up.UserProperty = ("u", "v")
        c.unsubscribe(["midge/+/temp", "midge/#"], properties=up)
        step("unsubscribe([midge/+/temp, midge/#]" + (", UserProperty=(u,v))" if v5 else ")"))
        if not unsubscribed.wait(5):
            raise TimeoutError("paho: no UNSUBACK")

        if v5:
            dp = Properties(PacketTypes.DISCONNECT)
            dp.SessionExpiryInterval = 30
            dp.ReasonString = "bye"
            dp.UserProperty = ("dk", "dv")
            c.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"),
                         properties=dp)
            step("disconnect(reason=0x04 Disconnect with will message, SessionExpiryInterval=30 "
                 "ReasonString=bye UserProperty=(dk,dv))")
        else:
            c.disconnect()
            step("disconnect()")
    finally:
        c.loop_stop()
    packets = broker.finish()

    header = {
        "tool": "paho-mqtt (Python)",
        "version": f"paho-mqtt {paho.mqtt.__version__} on Python {sys.version.split()[0]}",
        "command": f'mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fixture-paho", protocol={"MQTTv5" if v5 else "MQTTv311"})',
    }
    for i, s in enumerate(summary, 1):
        header[f"step {i}"] = s
    header["protocol"] = protocol_of(packets)
    header["date"] = TODAY
    write_fixture(name, header, packets)


def capture_paho() -> None:
    run_paho("paho_v311", mqtt.MQTTv311)
    run_paho("paho_v5", mqtt.MQTTv5)


def main() -> None:
    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    capture_mosquitto()
    capture_paho()


if __name__ == "__main__":
    main()
