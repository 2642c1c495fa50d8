"""pytest set-up: tests/device/ runs under the real MicroPython (see mpy_plugin)."""
pytest_plugins = ["mpy_plugin"]
