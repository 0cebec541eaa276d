"""QoS 2 end to end: every message arrives exactly once, in order, at QoS 2."""

import paho_util as u

N = 50
port, proto, tag = u.args()
topic = "paho/qos2/" + tag
sub = u.Client(port, proto)
sub.connect()
sub.subscribe(topic, 2)
pub = u.Client(port, proto)
pub.connect()
for i in range(N):
    pub.publish(topic, str(i).encode(), qos=2)
got = sub.expect(N)
payloads = [m.payload.decode() for m in got]
u.check(payloads == [str(i) for i in range(N)], "out of order or missing", got=payloads)
u.check(all(m.qos == 2 for m in got), "not delivered at QoS 2", qos=[m.qos for m in got])
sub.expect_none(0.5)
pub.disconnect()
sub.disconnect()
u.done(received=len(got))
