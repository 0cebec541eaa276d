"""Wills: a client that drops its connection has its will published; one that sends
DISCONNECT does not."""

import paho_util as u

port, proto, tag = u.args()
topic = "paho/will/" + tag
watcher = u.Client(port, proto)
watcher.connect()
watcher.subscribe(topic + "/#", 1)

# Clean DISCONNECT: the will is discarded.
polite = u.Client(port, proto, will={"topic": topic + "/polite", "payload": b"polite", "qos": 1})
polite.connect()
polite.disconnect()
watcher.expect_none(1.0)

# Dropped connection: the will is published.
crash = u.Client(port, proto, will={"topic": topic + "/crash", "payload": b"gone", "qos": 1})
crash.connect()
crash.drop()
[m] = watcher.expect(1)
u.check(m.topic == topic + "/crash" and m.payload == b"gone", "wrong will %s %r" % (m.topic, m.payload))
u.check(m.qos == 1, "will delivered at QoS %d" % m.qos)
watcher.disconnect()
u.done(will_topic=m.topic, will_payload=m.payload.decode())
