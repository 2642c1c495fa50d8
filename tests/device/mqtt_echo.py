"""A MicroPython device process for the broker tests (tests/test_device_mqtt_unix.py):
``firmware.mqtt`` as a device uses it, driven over its own link topic.

    micropython mqtt_echo.py URL USERNAME CA|- GIVE_UP_MS|- KEEPALIVE

It connects as user ``USERNAME`` (``mqtts://`` verifies the broker against ``CA``),
subscribes to ``plugpay/link/USERNAME/to-device`` and answers each message there on
``.../to-host``: a JSON object is a command (``publish`` to a topic, ``subscribe`` to
one, ``bye``), anything else comes back reversed at QoS 1. It prints one ``@@`` JSON
record per event (``connected``, ``message``, ``subscribed``, ``reconnected``, ``error``,
``bye``) and exits 0 on ``bye``, 3 on an ``MqttError``.
"""
import json
import sys

from plugpay.firmware import mqtt_tls
from plugpay.firmware.mqtt import Mqtt, MqttError


def emit(event, **fields):
    fields["event"] = event
    print("@@ " + json.dumps(fields))


def broker(url):
    scheme, rest = url.split("://")
    host, port = rest.rsplit(":", 1)
    return host, int(port), scheme == "mqtts"


def command(mqtt, text):
    order = json.loads(text)
    if order["cmd"] == "publish":
        mqtt.publish(order["topic"], order["data"].encode(), order.get("qos", 1))
    elif order["cmd"] == "subscribe":
        mqtt.subscribe(order["topic"], 1)
        emit("subscribed", topic=order["topic"])
    elif order["cmd"] == "bye":
        return True
    return False


def main(url, username, ca, give_up, keepalive):
    host, port, tls = broker(url)
    mqtt = Mqtt(host, port, keepalive=keepalive, give_up_ms=None if give_up == "-" else int(give_up),
                username=username, tls=mqtt_tls.context(ca) if tls else None)
    base = "plugpay/link/%s/" % username
    mqtt.connect()
    mqtt.subscribe(base + "to-device")
    emit("connected", client_id=mqtt.client_id, connects=mqtt.connects, url=mqtt.url)
    connects = mqtt.connects
    while True:
        for topic, payload in mqtt.poll(500):
            emit("message", topic=topic, size=len(payload), head=payload[:20].hex())
            if topic != base + "to-device":
                continue
            if payload[:1] == b"{":
                if command(mqtt, payload.decode()):
                    mqtt.close()
                    emit("bye", connects=mqtt.connects)
                    return
            else:
                mqtt.publish(base + "to-host", bytes(reversed(payload)))
        if mqtt.connects != connects:
            connects = mqtt.connects
            emit("reconnected", connects=connects, last_error=mqtt.last_error)


try:
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
except MqttError as e:
    emit("error", error=str(e))
    sys.exit(3)
