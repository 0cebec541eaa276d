"""Retained messages: a late subscriber gets the retained message with RETAIN set, and an
empty retained publish deletes it."""

import paho_util as u

port, proto, tag = u.args()
topic = "paho/retained/" + tag
pub = u.Client(port, proto)
pub.connect()
pub.publish(topic, b"kept", qos=1, retain=True)

late = u.Client(port, proto)
late.connect()
late.subscribe(topic, 1)
[m] = late.expect(1)
u.check(m.payload == b"kept", "wrong payload %r" % m.payload)
u.check(m.retain, "retained message delivered without RETAIN")
# A live publish to an existing subscriber is not flagged retained [MQTT-3.3.1-9].
pub.publish(topic, b"live", qos=1, retain=True)
[m2] = late.expect(1)
u.check(m2.payload == b"live" and not m2.retain, "live retained publish: %r retain=%s" % (m2.payload, m2.retain))

pub.publish(topic, b"", qos=1, retain=True)
late.expect(1)  # the (empty) deletion itself is forwarded to current subscribers
after = u.Client(port, proto)
after.connect()
after.subscribe(topic, 1)
after.expect_none(1.0)
for c in (pub, late, after):
    c.disconnect()
u.done(retained=m.payload.decode(), retain_flag=m.retain)
