"""A real browser on the review page: the `cxrlabel review` server as a user starts it, and Debian's
chromium driven through its chromedriver (selenium). `.ci/run` installs both and sets
CXRLABEL_REQUIRE_BROWSER, so that there a missing browser fails instead of skipping."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def require_browser() -> None:
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    message = f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium chromium-driver"
    if os.environ.get("CXRLABEL_REQUIRE_BROWSER"):
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def chromium() -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # headless, and none of the background connections a closed network refuses
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(30)
    try:
        yield driver
    finally:
        driver.quit()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ReviewServer:
    """`cxrlabel review` in its own process, killable without warning."""

    def __init__(self, pairs: Path, judgements: Path, port: int, log: Path):
        self.url = f"http://127.0.0.1:{port}/"
        self.args = [sys.executable, "-m", "cxrlabel.cli", "review", "--pairs", str(pairs), "--judgements", str(judgements), "--port", str(port)]
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> ReviewServer:
        self.process = subprocess.Popen(self.args, stdout=self.log.open("a"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url, timeout=1)
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise AssertionError(f"cxrlabel review exited: {self.log.read_text()}") from None
                time.sleep(0.2)
        raise AssertionError(f"cxrlabel review did not answer within 30 s: {self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as when a machine loses power."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
