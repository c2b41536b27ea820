"""Persistent sessions and QoS2 with Eclipse Paho (paho-mqtt 1.6, MQTT 3.1.1), for
tests/tests/global_broker.rs: prints what the broker answered as JSON; the Rust test judges it.

usage: sessions.py PORT
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt

PORT = int(sys.argv[1])
WAIT = 10


def connect(client_id, clean):
    c = mqtt.Client(client_id=client_id, clean_session=clean, protocol=mqtt.MQTTv311)
    seen = {"connack": None, "granted": None, "messages": []}
    connected, subscribed, enough = threading.Event(), threading.Event(), threading.Event()

    def on_connect(client, userdata, flags, rc):
        seen["connack"] = [flags.get("session present", 0), rc]
        connected.set()

    def on_subscribe(client, userdata, mid, granted):
        seen["granted"] = list(granted)
        subscribed.set()

    def on_message(client, userdata, m):
        seen["messages"].append([m.topic, m.payload.decode(), m.qos, bool(m.dup)])
        if len(seen["messages"]) >= 10:
            enough.set()

    c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
    c.connect("127.0.0.1", PORT, keepalive=30)
    c.loop_start()
    if not connected.wait(WAIT):
        sys.exit("no CONNACK in time")
    return c, seen, subscribed, enough


def close(c):
    c.disconnect()
    c.loop_stop()


out = {}
c, seen, subscribed, _ = connect("paho-keeper", False)
c.subscribe("app/paho/#", 2)
if not subscribed.wait(WAIT):
    sys.exit("no SUBACK in time")
out["first"], out["granted"] = seen["connack"], seen["granted"]
close(c)

p, _, _, _ = connect("paho-publisher", True)
for qos in (1, 2):
    for i in range(5):
        p.publish("app/paho/q%d" % qos, str(i), qos).wait_for_publish(WAIT)
p.publish("app/paho/q0", "not kept", 0).wait_for_publish(WAIT)
close(p)

c, seen, _, enough = connect("paho-keeper", False)
enough.wait(WAIT)
out["second"], out["messages"] = seen["connack"], seen["messages"]
close(c)

c, seen, _, _ = connect("paho-keeper", True)
out["clean"] = seen["connack"]
close(c)
c, seen, _, _ = connect("paho-keeper", False)
out["after_clean"] = seen["connack"]
close(c)
print(json.dumps(out))
