"""The live dashboard in a real browser: ``plugpay demo`` (an RA, four replica processes, the
embedded broker, the gateway, a vehicle and a charger) serves it, headless Chromium (Debian's,
driven by Playwright) shows the session's progress changing as it runs, the replicas, and
the session's channel open under the same id as the ledger's event log; nothing only the RA
or the two parties may know is on the page. A screenshot is saved in pytest's tmp dir."""
import os
import re
import subprocess
import sys
import time

import pytest

from test_ledger_watch import Lines, stop

CHROMIUM = "/usr/bin/chromium"
PLUGPAY = [sys.executable, "-m", "plugpay.tools.cli"]
# 4 kWh at 11 kW is 1309 simulated seconds: about 4 s at this scale, long enough to watch
DEMO = ["demo", "--energy-wh", "4000", "-n", "10", "--scale", "300", "--timeout", "60"]
WAIT_MS = 30000

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed "
                                "(tools/setup.sh installs it)")


def session_energy(page):
    """The vehicle's energy as the page shows it (Wh)."""
    text = page.inner_text(".session .side[data-role=consumer] .bar >> nth=0")
    return int(text.split("/")[0])


def test_the_page_shows_a_session_live_and_the_ledger_under_the_same_ids(tmp_path):
    from playwright.sync_api import sync_playwright

    demo = subprocess.Popen(PLUGPAY + DEMO + ["--dir", str(tmp_path / "demo")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = Lines(demo)
        url = lines.until(lambda seen: seen and "dashboard:" in seen[-1], "the demo's dashboard")[-1].split()[-1]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector("#connection.good", timeout=WAIT_MS)
            page.wait_for_function("document.querySelectorAll('#replicas tbody tr').length == 4", timeout=WAIT_MS)
            page.wait_for_selector(".session .side[data-role=consumer]", timeout=WAIT_MS)
            page.wait_for_function("document.querySelector('.session h3').textContent.includes('running')",
                                   timeout=WAIT_MS)
            seen = [session_energy(page)]
            deadline = time.monotonic() + WAIT_MS / 1000
            while len(set(seen)) < 3 and time.monotonic() < deadline:  # the page updates itself: no reload
                page.wait_for_timeout(200)
                seen.append(session_energy(page))
            assert len(set(seen)) >= 3 and seen == sorted(seen), seen
            page.wait_for_selector(".session .onchain", timeout=WAIT_MS)
            onchain = page.inner_text(".session .onchain")
            opened = re.search(r"channel_open ([0-9a-f]{64})", onchain).group(1)
            page.wait_for_function("id => [...document.querySelectorAll('#events td.id')].some("
                                   "td => td.textContent == id)", arg=opened, timeout=WAIT_MS)
            roles = page.locator("#replicas tbody tr td:nth-child(3)").all_inner_texts()
            assert sorted(roles) == ["backup"] * 3 + ["primary"]
            channel_rows = page.locator("#channels tbody tr").all_inner_texts()
            assert any(opened[:16] in row and "open" in row for row in channel_rows), channel_rows
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            print("dashboard screenshot: %s" % shot)
            page.wait_for_function("document.querySelector('.session h3').textContent.includes('settled')",
                                   timeout=WAIT_MS)
            content = page.content()
            browser.close()
        output = "\n".join(lines.until(lambda seen: seen and seen[-1].startswith("  result:"), "the demo's end"))
        assert demo.wait(30) == 0 and output.endswith("result: OK"), output
        session_id = re.search(r"topics plugpay/link/([0-9a-f]+)/", output).group(1)
        for private in (session_id, "Demo vehicle", "DEMO-VEHICLE", "1PLUGPAY0"):  # the link's secret, the identity
            assert private not in content, private
        assert shot.stat().st_size > 10000
    finally:
        if demo.poll() is None:
            stop(demo)
