"""ESP32 boot: refuse a FAT filesystem, then join the Wi-Fi named in /config.json and set the
clock. Runs before main.py on every reset. Wi-Fi credentials come from /config.json (``plugpay
flash`` copies it), never from code. main.py checks the filesystem again and will not run
the role on FAT.
"""
from plugpay.boards.common import profile
from plugpay.boards.esp32 import startup

CONFIG = "/config.json"

if not startup.filesystem_is_littlefs():
    print("plugpay: the filesystem is not littlefs, the wallet would not survive power loss: "
          "erase the flash and write a MicroPython image (plugpay flash --firmware IMAGE.bin)")
else:
    try:
        address = startup.join_wifi(profile.load(CONFIG, "esp32")["wifi"])
        print("plugpay: Wi-Fi up, address %s" % address)
        if not startup.set_clock():
            print("plugpay: NTP failed: Unix time is wrong until it succeeds")
    except (profile.ConfigError, OSError) as e:
        print("plugpay: boot: %s" % e)
