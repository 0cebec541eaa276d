"""QoS 1 over a transport other than plain TCP: `paho_transport.py PORT VERSION MODE [CA]`, MODE
tls, tls-alpn (TLS offering the ALPN protocol "mqtt", which the server must choose), ws or wss
(WebSocket at /mqtt), CA the PEM file the server certificate must chain to.

Ten QoS 1 messages and one of 300 KB (several WebSocket frames and TLS records) reach a QoS 1
subscriber on the same transport in order, byte for byte, at QoS 1, and nothing more."""

import sys

import paho_util as u

port, proto, tag = u.args()
mode = sys.argv[3] if len(sys.argv) > 3 else u.fail("no MODE")
ca = sys.argv[4] if len(sys.argv) > 4 else None
options = {
    "tls": {"ca": ca},
    "tls-alpn": {"ca": ca, "alpn": ["mqtt"]},
    "ws": {"transport": "websockets", "ws_path": "/mqtt"},
    "wss": {"transport": "websockets", "ws_path": "/mqtt", "ca": ca},
}.get(mode) or u.fail("unknown MODE %r" % mode)
u.check(("ca" not in options) or ca, "MODE %s needs a CA" % mode)

topic = "paho/%s/%s" % (mode, tag)
sub = u.Client(port, proto, **options)
sub.connect()
sub.subscribe(topic, 1)
pub = u.Client(port, proto, **options)
pub.connect()
alpn = None
if mode == "tls-alpn":
    alpn = pub.c.socket().selected_alpn_protocol()
    u.check(alpn == "mqtt", "ALPN chose %r, not mqtt" % alpn)
sent = [("m%d" % i).encode() for i in range(10)]
sent.append(bytes((i * 7 + (i >> 10)) & 0xFF for i in range(300 * 1024)))
for payload in sent:
    pub.publish(topic, payload, qos=1)
got = sub.expect(len(sent))
u.check(
    [m.payload for m in got] == sent,
    "payloads differ",
    got=[m.payload[:16].decode(errors="replace") + "(%d)" % len(m.payload) for m in got],
)
u.check(all(m.qos == 1 for m in got), "not delivered at QoS 1", qos=[m.qos for m in got])
u.check(all(m.topic == topic for m in got), "wrong topic", topics=[m.topic for m in got])
sub.expect_none(0.3)
pub.disconnect()
sub.disconnect()
u.done(mode=mode, received=len(got), big=len(sent[-1]), alpn=alpn)
