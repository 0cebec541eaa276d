"""Persistent session: messages published while the subscriber is away are delivered when it
comes back, with Session Present set."""

import paho_util as u

N = 5
port, proto, tag = u.args()
topic = "paho/session/" + tag
cid = "paho-sess-" + tag
sub = u.Client(port, proto, client_id=cid, clean=True, session_expiry=300)
sub.connect()
sub.disconnect()
# Start from a clean slate, then keep the session.
sub = u.Client(port, proto, client_id=cid, clean=False, session_expiry=300)
present, _ = sub.connect()
sub.subscribe(topic, 1)
sub.disconnect()

pub = u.Client(port, proto)
pub.connect()
for i in range(N):
    pub.publish(topic, ("offline-%d" % i).encode(), qos=1)
pub.disconnect()

back = u.Client(port, proto, client_id=cid, clean=False, session_expiry=300)
present, _ = back.connect()
u.check(present, "Session Present not set on reconnect")
got = [m.payload.decode() for m in back.expect(N)]
u.check(got == ["offline-%d" % i for i in range(N)], "offline messages", got=got)
back.expect_none(0.5)
back.disconnect()
# Clean up the session.
gone = u.Client(port, proto, client_id=cid, clean=True, session_expiry=0)
gone.connect()
gone.disconnect()
u.done(session_present=present, offline=got)
