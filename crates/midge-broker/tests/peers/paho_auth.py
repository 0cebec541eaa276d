"""Authentication and authorization from paho-mqtt 2.x, against a broker with a password file.

    paho_auth.py PORT VERSION connect USER PASSWORD
        Connects with USER and PASSWORD and reports the CONNACK: {"rc": value, "reason": name,
        "failure": bool}. paho reports a 3.1.1 return code as the 5.0 reason code of the same
        meaning (4 as 134 "Bad user name or password"). An accepted client also sends itself a
        QoS 1 message ("round_trip": true).

    paho_auth.py PORT VERSION subscribe USER PASSWORD FILTER...
        Connects (it must be accepted) and subscribes to each FILTER in a SUBSCRIBE of its own;
        reports each SUBACK's code: {"codes": [[value, name], ...]}.

VERSION is "311" or "5". Prints one JSON line and exits non-zero on failure; every wait is
bounded.
"""

import queue
import sys

import paho.mqtt.client as mqtt

import paho_util as u

if len(sys.argv) < 6:
    u.fail("usage: paho_auth.py PORT 311|5 connect|subscribe USER PASSWORD [FILTER...]")
port, proto, tag = u.args()
mode, user, password = sys.argv[3], sys.argv[4], sys.argv[5]
filters = sys.argv[6:]


def code(rc):
    return [rc.value, str(rc)]


client = u.Client(port, proto, client_id="paho-auth-" + tag)
client.c.username_pw_set(user, password)
if proto == mqtt.MQTTv5:
    client.c.connect("127.0.0.1", port, 30, clean_start=True)
else:
    client.c.connect("127.0.0.1", port, 30)
client.c.loop_start()
try:
    flags, rc, _props = client.connacks.get(timeout=u.TIMEOUT)
except queue.Empty:
    u.fail("no CONNACK within %ss" % u.TIMEOUT)

if mode == "connect":
    result = {"rc": rc.value, "reason": str(rc), "failure": rc.is_failure}
    if not rc.is_failure:
        topic = "paho/auth/" + tag
        client.subscribe(topic, 1)
        client.publish(topic, b"authenticated", qos=1)
        [m] = client.expect(1)
        u.check(m.payload == b"authenticated", "wrong payload %r" % m.payload)
        result["round_trip"] = True
        client.disconnect()
    else:
        client.c.loop_stop()
    u.done(**result)
elif mode == "subscribe":
    u.check(not rc.is_failure, "CONNECT refused: %s" % rc)
    codes = []
    for f in filters:
        result, mid = client.c.subscribe(f, 1)
        u.check(result == mqtt.MQTT_ERR_SUCCESS, "subscribe failed: %s" % result)
        try:
            got_mid, rcs = client.subacks.get(timeout=u.TIMEOUT)
        except queue.Empty:
            u.fail("no SUBACK for %s" % f)
        u.check(got_mid == mid, "SUBACK for another SUBSCRIBE")
        u.check(len(rcs) == 1, "SUBACK with %d codes for one filter" % len(rcs))
        codes.append(code(rcs[0]))
    client.disconnect()
    u.done(codes=codes)
else:
    u.fail("unknown mode %r" % mode)
