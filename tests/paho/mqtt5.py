"""MQTT 5.0 with Eclipse Paho (python3-paho-mqtt, protocol=MQTTv5) against the apps listener
on 127.0.0.1:<port>: request/response with a response topic and correlation data, user
properties, content type and payload format forwarded; SUBACK reason codes for shared
subscriptions; a topic alias out of range answered with DISCONNECT 0x94 while another client
keeps receiving. Prints one JSON object of what was seen. Every wait is bounded."""

import json
import queue
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

PORT = int(sys.argv[1])
WAIT = 10.0


def client(name):
    events = queue.Queue()
    c = mqtt.Client(client_id=name, protocol=mqtt.MQTTv5)
    c.on_connect = lambda c, u, f, rc, p=None: events.put(("connack", rc.value))
    c.on_subscribe = lambda c, u, mid, rcs, p: events.put(("suback", [r.value for r in rcs]))
    c.on_message = lambda c, u, m: events.put(("message", m))
    c.on_disconnect = lambda c, u, rc, p=None: events.put(
        ("disconnect", rc.value if hasattr(rc, "value") else rc))
    c.connect("127.0.0.1", PORT, keepalive=30, clean_start=True)
    c.loop_start()
    return c, events


def expect(events, kind):
    deadline = time.monotonic() + WAIT
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SystemExit(f"no {kind} in time")
        got, value = events.get(timeout=left)
        if got == kind:
            return value


def props(**fields):
    p = Properties(PacketTypes.PUBLISH)
    for k, v in fields.items():
        setattr(p, k, v)
    return p


out = {}
responder, rev = client("paho5-responder")
out["responder_connack"] = expect(rev, "connack")
responder.subscribe("app/paho5/req", qos=1)
expect(rev, "suback")
requester, qev = client("paho5-requester")
out["requester_connack"] = expect(qev, "connack")
requester.subscribe("app/paho5/reply/requester", qos=1)
expect(qev, "suback")

request = props(ResponseTopic="app/paho5/reply/requester", CorrelationData=b"\x01corr",
                UserProperty=[("a", "1"), ("b", "2")], ContentType="text/plain",
                PayloadFormatIndicator=1)
requester.publish("app/paho5/req", b"ping", qos=1, properties=request)
m = expect(rev, "message")
p = m.properties
out["request"] = {
    "payload": m.payload.decode(),
    "response_topic": getattr(p, "ResponseTopic", None),
    "correlation": getattr(p, "CorrelationData", b"").hex(),
    "user": [list(kv) for kv in getattr(p, "UserProperty", [])],
    "content_type": getattr(p, "ContentType", None),
    "format": getattr(p, "PayloadFormatIndicator", None),
}
reply = props(CorrelationData=p.CorrelationData)
responder.publish(p.ResponseTopic, b"pong", qos=1, properties=reply)
m = expect(qev, "message")
out["reply"] = {
    "payload": m.payload.decode(),
    "correlation": getattr(m.properties, "CorrelationData", b"").hex(),
}

# Shared subscriptions: not offered (0x9E). (Paho refuses to send a share name with a wildcard;
# broker/tests/mqtt5.rs sends it raw: 0x8F.)
requester.subscribe([("$share/g/app/x", 1), ("app/ok", 1)])
out["shared_suback"] = expect(qev, "suback")

# A topic alias over the broker's maximum: DISCONNECT 0x94; the responder is undisturbed.
requester.publish("app/paho5/req", b"bad", qos=0, properties=props(TopicAlias=65000))
out["alias_disconnect"] = expect(qev, "disconnect")
witness, wev = client("paho5-witness")
expect(wev, "connack")
witness.publish("app/paho5/req", b"still", qos=1)
out["still"] = expect(rev, "message").payload.decode()

for c in (requester, responder, witness):
    c.loop_stop()
    c.disconnect()
print(json.dumps(out))
