"""Browser tests of ``chromalab app`` (``make test-e2e``): the app runs in its own process on
127.0.0.1 and headless Chromium, from the system's ``chromium`` package, drives it through
Playwright (no browser download). Without Chromium, gradio or Playwright the tests skip and say
why (``-rs`` prints it)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Where ``make test-e2e`` notes why ``apt-get install chromium`` failed, if it did.
APT_LOG = ROOT / "outputs" / "e2e-apt.log"


def chromium_path() -> str:
    """The Chromium executable (``CHROMALAB_CHROMIUM``, else ``chromium`` on the PATH); skips
    the test, with the reason, when there is none."""
    path = os.environ.get("CHROMALAB_CHROMIUM") or shutil.which("chromium")
    if path and Path(path).is_file():
        return path
    why = "Chromium is not installed (make test-e2e installs Debian's chromium with apt-get)"
    if os.environ.get("CHROMALAB_CHROMIUM"):
        why = f"no Chromium at CHROMALAB_CHROMIUM={os.environ['CHROMALAB_CHROMIUM']}"
    if APT_LOG.is_file():
        last = (APT_LOG.read_text().strip().splitlines() or ["(no output)"])[-1]
        why += f"; apt-get failed: {last} (log: {APT_LOG})"
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("gradio", reason="the app needs gradio: pip install './shared[app]'")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser tests need pip install './shared[e2e]'"
    )
    executable = chromium_path()
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


def start_app(args: list[str], log: Path, timeout: float = 180.0) -> tuple[subprocess.Popen, str]:
    """``chromalab app ARGS`` on a free port of 127.0.0.1, run from the repository's root (relative
    paths in ``args`` are the repository's); returns the process and its URL once the page
    answers (the process's output goes to ``log``)."""
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               PYTHONUNBUFFERED="1")  # fmt: skip
    command = [sys.executable, "-m", "chromalab.cli", "app", "--host", "127.0.0.1",
               "--port", str(port), "--device", "cpu", *args]  # fmt: skip
    handle = log.open("w")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise TimeoutError(f"the app did not answer on {url} in {timeout} s:\n{log.read_text()}")
