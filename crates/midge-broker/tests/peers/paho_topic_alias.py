"""5.0 topic aliases: the broker announces Topic Alias Maximum in CONNACK, and a client may
set an alias and then publish with an empty topic."""

import sys

import paho_util as u
from paho.mqtt.packettypes import PacketTypes

port, proto, tag = u.args()
expected_max = int(sys.argv[3]) if len(sys.argv) > 3 else None
topic = "paho/alias/" + tag
sub = u.Client(port, proto)
sub.connect()
sub.subscribe(topic, 1)
pub = u.Client(port, proto)
_, connack = pub.connect()
alias_max = getattr(connack, "TopicAliasMaximum", 0) if connack is not None else 0
u.check(alias_max > 0, "no Topic Alias Maximum in CONNACK")
if expected_max is not None:
    u.check(alias_max == expected_max, "Topic Alias Maximum %d, expected %d" % (alias_max, expected_max))
pub.publish(topic, b"set", qos=1, properties=u.props(PacketTypes.PUBLISH, TopicAlias=1))
pub.publish("", b"use", qos=1, properties=u.props(PacketTypes.PUBLISH, TopicAlias=1))
# The highest alias the broker allows works too.
pub.publish(topic, b"max", qos=1, properties=u.props(PacketTypes.PUBLISH, TopicAlias=alias_max))
pub.publish("", b"max-use", qos=1, properties=u.props(PacketTypes.PUBLISH, TopicAlias=alias_max))
got = sub.expect(4)
u.check([m.topic for m in got] == [topic] * 4, "topics", topics=[m.topic for m in got])
u.check([m.payload for m in got] == [b"set", b"use", b"max", b"max-use"], "payloads")
pub.disconnect()
sub.disconnect()
u.done(topic_alias_maximum=alias_max)
