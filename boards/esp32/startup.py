"""What an ESP32 checks and brings up before the role runs: littlefs, Wi-Fi and the clock.

Runs only on a board (``vfs``, ``network``, ``ntptime``): no ESP32 is attached where the
project is tested, so this module is compiled by mpy-cross in CI but never executed there.
"""


def filesystem_is_littlefs():
    """True when ``/`` is littlefs. The wallet's power-loss safety rests on littlefs (atomic
    rename, data committed on close: DESIGN.md); FAT gives neither. ``vfs.mount()`` without
    arguments lists the mounts (MicroPython 1.23 and newer)."""
    import vfs

    for fs, mount in vfs.mount():
        if mount == "/":
            return type(fs).__name__.startswith("VfsLfs")
    return False


def join_wifi(wifi, timeout_ms=20000):
    """Join the network named in the config; raises OSError when it does not come up."""
    import network
    import time

    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    if not sta.isconnected():
        sta.connect(wifi["ssid"], wifi["password"])
        start = time.ticks_ms()
        while not sta.isconnected():
            if time.ticks_diff(time.ticks_ms(), start) > timeout_ms:
                raise OSError("Wi-Fi %r did not connect within %d s" % (wifi["ssid"], timeout_ms // 1000))
            time.sleep_ms(200)
    return sta.ifconfig()[0]


EPOCH_2000 = 946684800  # seconds from 1970 to 2000: some ports count time from 2000


def unix_s():
    """Unix seconds, whatever epoch this port's ``time.time()`` counts from."""
    import time

    return time.time() + (EPOCH_2000 if time.gmtime(0)[0] == 2000 else 0)


def set_clock():
    """Market windows and meter readings carry Unix time: take it from NTP. False on failure."""
    import ntptime

    try:
        ntptime.settime()
        return True
    except OSError:
        return False
