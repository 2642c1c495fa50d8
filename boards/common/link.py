"""A board's way to the broker: ``connector(profile)`` gives ``connect(username)``, a fresh
MQTT connection (``firmware.mqtt.Mqtt``) to the profile's broker each time, TLS verified
against the deployment's CA for ``mqtts://``. The same on an ESP32, a Pi and a simulated
board: the role names the connection that runs a link session by its session id, and
every other by a random name (``username=None``)."""
from .profile import ConfigError


def connector(profile):
    from plugpay.firmware.mqtt import Mqtt

    host, port = profile["broker_address"]
    tls = None
    if profile["broker"].startswith("mqtts://"):
        from plugpay.firmware import mqtt_tls

        if not profile["broker_ca"]:
            raise ConfigError("config broker_ca: an mqtts:// broker needs the deployment's CA file")
        try:
            tls = mqtt_tls.context(profile["broker_ca"])
        except ValueError as e:
            raise ConfigError("config broker_ca: %s" % e)

    def connect(username=None):
        mqtt = Mqtt(host, port, username=username, tls=tls)
        mqtt.connect()
        return mqtt
    return connect
