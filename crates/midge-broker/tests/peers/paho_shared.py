"""Shared subscriptions: two members of $share/g/... split the messages between them, each
message going to exactly one; a plain subscriber still gets all of them."""

import paho_util as u

N = 20
port, proto, tag = u.args()
topic = "paho/shared/" + tag
a = u.Client(port, proto)
a.connect()
a.subscribe("$share/g/" + topic, 1)
b = u.Client(port, proto)
b.connect()
b.subscribe("$share/g/" + topic, 1)
plain = u.Client(port, proto)
plain.connect()
plain.subscribe(topic, 1)
pub = u.Client(port, proto)
pub.connect()
for i in range(N):
    pub.publish(topic, str(i).encode(), qos=1)
plain.expect(N)

def drain(c):
    out = []
    while True:
        try:
            out.append(c.messages.get(timeout=0.5).payload.decode())
        except u.queue.Empty:
            return out

got_a, got_b = drain(a), drain(b)
both = sorted(got_a + got_b, key=int)
u.check(both == [str(i) for i in range(N)], "each message to exactly one member", a=got_a, b=got_b)
u.check(got_a and got_b, "messages not split between the members", a=got_a, b=got_b)
for c in (a, b, plain, pub):
    c.disconnect()
u.done(member_a=len(got_a), member_b=len(got_b))
