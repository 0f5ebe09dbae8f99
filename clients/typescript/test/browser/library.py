"""Runs the TypeScript client library (dist/streamgate.browser.js) in headless Chromium.

Usage: library.py PAGE_URL [--chromium PATH] [--chromedriver PATH] [--timeout SECONDS]

Opens the page (test/browser/library.html, served with the bundle by test/browser.test.ts),
which follows several streams over one connection and sends records into them, waits until
it says `done` (or `failed: …`), and prints its report (JSON) on stdout; the test checks it.
Exits 1 when the page failed, logged a script error or did not finish in time, and 77 when
selenium, Chromium or chromedriver is missing (the test skips before it comes to that).
Chromium runs with a fresh profile, removed at the end.
"""

import argparse
import shutil
import signal
import sys
import tempfile

try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:
    print("selenium is not installed", file=sys.stderr)
    sys.exit(77)

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def browser(chromium, chromedriver, profile):
    options = Options()
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.binary_location = chromium
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(chromedriver))


def status_of(d):
    return d.find_element(By.ID, "status").text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    parser.add_argument("--chromedriver", default=shutil.which("chromedriver"))
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    # Killed by the test (its timeout): Chromium is quit and the profile removed all the same.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    if not args.chromium or not args.chromedriver:
        print("chromium and chromedriver are needed", file=sys.stderr)
        sys.exit(77)

    profile = tempfile.mkdtemp(prefix="streamgate-chromium-")
    d = None
    try:
        d = browser(args.chromium, args.chromedriver, profile)
        d.get(args.url)
        try:
            WebDriverWait(d, args.timeout, poll_frequency=0.1).until(
                lambda d: status_of(d) == "done" or status_of(d).startswith("failed"))
        except TimeoutException:
            sys.exit(f"the page did not finish in {args.timeout} s: {status_of(d)}")
        status = status_of(d)
        log = d.get_log("browser")
        # Script errors only (what the network logs is the test's to judge from the report).
        errors = [e for e in log if e["level"] == "SEVERE" and e["source"] != "network"]
        if status != "done":
            sys.exit(f"the page {status}; browser log: {log}")
        if errors:
            sys.exit(f"script errors: {errors}")
        print(d.find_element(By.ID, "report").text)
    finally:
        if d is not None:
            d.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
