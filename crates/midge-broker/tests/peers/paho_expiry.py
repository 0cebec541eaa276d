"""5.0 message expiry: a message that expires while its subscriber is offline is not
delivered; one with a long expiry is, with the remaining interval."""

import time

import paho_util as u
from paho.mqtt.packettypes import PacketTypes

port, proto, tag = u.args()
u.check(proto == u.mqtt.MQTTv5, "message expiry is MQTT 5.0 only")
topic = "paho/expiry/" + tag
cid = "paho-exp-" + tag
sub = u.Client(port, proto, client_id=cid, clean=True, session_expiry=300)
sub.connect()
sub.subscribe(topic, 1)
sub.disconnect()

pub = u.Client(port, proto)
pub.connect()
pub.publish(topic, b"short", qos=1, properties=u.props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
pub.publish(topic, b"long", qos=1, properties=u.props(PacketTypes.PUBLISH, MessageExpiryInterval=100))
pub.disconnect()
time.sleep(2.2)

back = u.Client(port, proto, client_id=cid, clean=False, session_expiry=0)
present, _ = back.connect()
u.check(present, "Session Present not set")
[m] = back.expect(1)
u.check(m.payload == b"long", "expired message delivered: %r" % m.payload)
remaining = getattr(m.properties, "MessageExpiryInterval", None)
u.check(remaining is not None, "Message Expiry Interval not forwarded")
u.check(remaining <= 98, "remaining interval %s not reduced by the 2 s offline" % remaining)
u.check(remaining >= 90, "remaining interval %s too small" % remaining)
back.expect_none(0.5)
back.disconnect()
u.done(remaining_expiry=remaining)
