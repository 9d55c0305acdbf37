"""Headless Debian Chromium driven by Selenium: the browser tests and the README screenshot.

Uses the system's ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (``make browser``
installs them), never a downloaded browser. The flags keep Chromium off the network on its
own (no component updates, sync or field trials), which a closed network would refuse anyway.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
    "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
)


class BrowserMissingError(RuntimeError):
    """Chromium or chromedriver is not installed."""


def chromium(user_data_dir: Path, window: tuple[int, int] = (1400, 1000)) -> webdriver.Chrome:
    """A fresh headless Chromium with its own profile directory."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if missing:
        raise BrowserMissingError(f"{', '.join(missing)} not found: run `make browser` (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.add_argument(f"--window-size={window[0]},{window[1]}")
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def full_page_screenshot(driver: webdriver.Chrome, path: Path, width: int = 1400, max_height: int = 2400) -> None:
    """Resize the window to the page's height (up to ``max_height``) and save a PNG."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(max_height, max(600, height)))
    time.sleep(0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))


def main() -> int:
    parser = argparse.ArgumentParser(description="Screenshot a page of the output browser in headless Chromium.")
    parser.add_argument("url")
    parser.add_argument("output", type=Path)
    parser.add_argument("--wait", type=float, default=6, help="seconds to let the page load its images")
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args()
    profile = Path(tempfile.mkdtemp(prefix="chromium-"))
    driver = chromium(profile)
    try:
        driver.get(args.url)
        time.sleep(args.wait)
        full_page_screenshot(driver, args.output, max_height=args.height)
        time.sleep(args.wait / 2)  # images that came into view after the resize
        driver.save_screenshot(str(args.output))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    print(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
