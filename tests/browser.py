"""Open a report in a real headless browser: check that it renders, and take screenshots.

Uses the system's Chromium and its matching chromedriver (Debian: ``apt-get install chromium
chromium-driver``; ``./dev.sh test`` installs them) through Selenium, which is pointed at both, so
nothing downloads a browser of its own. ``missing()`` says why a browser cannot be had here, for a
clear ``pytest.skip``.

As a script, it checks a page the same way and takes a screenshot of all of it (a 256-colour PNG),
as kept in the docs::

    python tests/browser.py REPORT.html SHOT.png [WIDTH]
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

#: where Debian (and most distributions) put the browser and its driver
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)
INSTALL = "apt-get install chromium chromium-driver (./dev.sh test does it) and pip install selenium"


def _which(names) -> str | None:
    for name in names:
        path = shutil.which(name) or (f"/usr/lib/chromium/{name}" if os.path.exists(f"/usr/lib/chromium/{name}") else None)
        if path:
            return path
    return None


def missing() -> str | None:
    """Why no browser can be driven here (None: one can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return f"selenium is not installed; {INSTALL}"
    if _which(BROWSERS) is None:
        return f"no Chromium found ({', '.join(BROWSERS)}); {INSTALL}"
    if _which(DRIVERS) is None:
        return f"no chromedriver found; {INSTALL}"
    return None


def start(width: int = 1360, height: int = 1000):
    """A headless Chromium that keeps the page's console messages."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _which(BROWSERS)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=_which(DRIVERS)), options=options)


PAGE_STATE = """
return {
  sections: Array.from(document.querySelectorAll('section')).map(s => ({
    id: s.id, height: s.getBoundingClientRect().height, text: s.innerText.length,
    images: s.querySelectorAll('img').length})),
  images: Array.from(document.images).map(i => ({
    alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})),
  external: Array.from(document.querySelectorAll('script[src], link[rel=stylesheet], img:not([src^="data:"])'))
    .map(e => e.outerHTML.slice(0, 120)),
  title: document.title,
};
"""


def load(driver, page: Path, timeout: float = 10.0) -> dict:
    """Open ``page`` and wait until every image has loaded (or failed); return what the page shows."""
    driver.get(Path(page).resolve().as_uri())
    deadline = time.time() + timeout
    while True:
        state = driver.execute_script(PAGE_STATE)
        if all(i["complete"] for i in state["images"]) or time.time() > deadline:
            return state
        time.sleep(0.05)


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]


def screenshot(driver, out: Path, width: int = 1360) -> Path:
    """The whole page (not just the window) as a PNG."""
    height = driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    Path(out).write_bytes(driver.get_screenshot_as_png())
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return Path(out)


def small_png(path: Path) -> None:
    """Rewrite a screenshot with a 256-colour palette (half the bytes; pages have few colours)."""
    from PIL import Image

    with Image.open(path) as im:
        palette = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette.save(path, optimize=True)


def main(argv) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    why = missing()
    if why:
        print(f"browser.py: {why}", file=sys.stderr)
        return 2
    width = int(argv[2]) if len(argv) == 3 else 1360
    driver = start(width)
    try:
        state = load(driver, Path(argv[0]))
        broken = [i["alt"] for i in state["images"] if not i["width"]]
        errors = console_errors(driver)
        path = screenshot(driver, Path(argv[1]), width)
    finally:
        driver.quit()
    small_png(path)
    print(f"{path}: {len(state['sections'])} sections, {len(state['images'])} images"
          f"{f', BROKEN: {broken}' if broken else ''}{f', console errors: {errors}' if errors else ''}")
    return 1 if broken or errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
