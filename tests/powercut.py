"""A ``Storage`` that loses power at a chosen write: the fault model of a real flash.

``PowerCut(root, at=k, torn=True)`` lets writes 1..k-1 complete; write k is interrupted
(``torn``: the temp file of a ``replace``, the file an ``overwrite`` rewrites in place
or the bytes of a ``write_at`` are half written; otherwise nothing of it happens) and ``Cut`` is raised; every later operation
raises ``Cut`` too, as a dead device would. A rename is never half done: that is the
promise of littlefs and POSIX that ``Storage`` relies on. The test then reopens the
folder with a plain ``Storage``, like a reboot.
"""
from plugpay.firmware.storage import Storage


class Cut(Exception):
    """The power went off."""


class PowerCut(Storage):
    def __init__(self, root, at, torn=False):
        super().__init__(root)
        self.at = at
        self.torn = torn
        self.dead = False

    def _begin(self):
        if self.dead:
            raise Cut("no power")
        if self.writes == self.at:
            self.dead = True
            return True
        return False

    def read(self, name):
        if self.dead:
            raise Cut("no power")
        return super().read(name)

    def read_at(self, name, offset, size):
        if self.dead:
            raise Cut("no power")
        return super().read_at(name, offset, size)

    def _write_file(self, path, data):
        if self._begin():
            if self.torn:
                super()._write_file(path, data[: len(data) // 2])
            raise Cut("during write %d (replace)" % self.writes)
        super()._write_file(path, data)

    def _write_over(self, path, data):
        if self._begin():
            if self.torn:  # the first half of the new bytes over the old ones
                super()._write_into(path, 0, data[: len(data) // 2])
            raise Cut("during write %d (overwrite)" % self.writes)
        super()._write_over(path, data)

    def _write_into(self, path, offset, data):
        if self._begin():
            if self.torn:
                super()._write_into(path, offset, data[: len(data) // 2])
            raise Cut("during write %d (write_at)" % self.writes)
        super()._write_into(path, offset, data)

    def remove(self, name):
        if self.dead:
            raise Cut("no power")
        if self.writes + 1 == self.at:
            self.writes += 1
            self.dead = True
            raise Cut("during write %d (remove)" % self.writes)
        super().remove(name)
