"""Drives the console page in headless Chromium, as a newcomer would use it.

Usage: console.py URL API_KEY [SCREENSHOT.png]

Opens the page, pastes the key, starts an `uppercase` stream, sends two records, waits for
their results to be rendered live (over the client library's one WebSocket), and checks the
stream list shows the stream with its counters. Then opens the page again with a stream token instead of the key,
sees the results replayed and sends one more record through the token. Prints the stream id on success; exits non-zero otherwise.
Called by tests/console.rs; the test command installs Chromium, chromedriver and selenium.
"""

import json
import shutil
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

WAIT_S = 30


def browser():
    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1280,860"):
        options.add_argument(arg)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        sys.exit("chromium and chromedriver are needed: run scripts/test, which installs them")
    options.binary_location = chromium
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(driver))


def issue_token(url, key, stream_id):
    """A send+subscribe token for the stream, asked for with the key (waiting out 429s)."""
    body = json.dumps({"scope": ["send", "subscribe"], "ttl_s": 600}).encode()
    for _ in range(WAIT_S):
        request = urllib.request.Request(
            f"{url.rstrip('/')}/api/stream/{stream_id}/tokens", data=body, method="POST",
            headers={"X-API-Key": key, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request) as resp:
                return json.load(resp)["token"]
        except urllib.error.HTTPError as e:
            if e.code != 429:
                raise
            time.sleep(int(e.headers.get("Retry-After", "1")))
    sys.exit("rate limited until the deadline")


def text_of(d, element_id):
    return d.find_element(By.ID, element_id).text


def main():
    url, key = sys.argv[1], sys.argv[2]
    screenshot = sys.argv[3] if len(sys.argv) > 3 else None
    d = browser()
    try:
        wait = WebDriverWait(d, WAIT_S)
        d.get(url)
        d.find_element(By.ID, "credential").send_keys(key)
        d.find_element(By.ID, "connect").click()
        wait.until(lambda d: "connected with an API key" in text_of(d, "status"))

        Select(d.find_element(By.ID, "processor")).select_by_value("uppercase")
        d.find_element(By.ID, "start").click()
        wait.until(lambda d: text_of(d, "stream-id").strip() != "")
        stream_id = text_of(d, "stream-id").strip()

        d.find_element(By.ID, "lines").send_keys('hello from a browser\n{"city": "oslo", "n": 1}')
        d.find_element(By.ID, "send").click()
        wait.until(lambda d: "acknowledged" in text_of(d, "status"))
        wait.until(lambda d: '"HELLO FROM A BROWSER"' in text_of(d, "results")
                   and '"city":"OSLO"' in text_of(d, "results"))

        # The list, refreshed, shows the stream with both records in and out.
        def counted(d):
            d.find_element(By.ID, "refresh").click()
            rows = d.find_elements(By.CSS_SELECTOR, f'#streams tr[data-stream-id="{stream_id}"]')
            if not rows:
                return False
            cells = [c.text for c in rows[0].find_elements(By.TAG_NAME, "td")]
            return cells[1:5] == ["uppercase", "open", "2", "2"]
        # Slowly: under the default rate limit each refresh is a request. A refresh that
        # lands while the row is read replaces it (stale): read again at the next poll.
        WebDriverWait(d, WAIT_S * 2, poll_frequency=3,
                      ignored_exceptions=[StaleElementReferenceException]).until(counted)
        if screenshot:
            d.save_screenshot(screenshot)

        # Script errors only: a 429 answer under the default rate limit is logged by the
        # browser too, and the page waits it out by design.
        # A stream token instead of the key: that one stream, its past results replayed,
        # and a send through it; no stream list.
        token = issue_token(url, key, stream_id)
        d.get(url)
        d.find_element(By.ID, "credential").send_keys(token)
        d.find_element(By.ID, "connect").click()
        wait.until(lambda d: "token for one stream" in text_of(d, "status"))
        assert not d.find_element(By.ID, "key-panel").is_displayed()
        wait.until(lambda d: '"HELLO FROM A BROWSER"' in text_of(d, "results"))
        d.find_element(By.ID, "lines").send_keys("sent with a token")
        d.find_element(By.ID, "send").click()
        wait.until(lambda d: '"SENT WITH A TOKEN"' in text_of(d, "results"))

        connections = d.execute_script("return document.body.dataset.connections")
        if connections != "1":
            sys.exit(f"the page opened {connections} WebSockets")

        errors = [e for e in d.get_log("browser")
                  if e["level"] == "SEVERE" and e["source"] != "network"]
        if errors:
            sys.exit(f"console errors: {errors}")
        print(stream_id)
    except Exception:
        # What the page showed, for the test's failure message.
        print("status:", text_of(d, "status"), file=sys.stderr)
        print("results:", text_of(d, "results"), file=sys.stderr)
        print("browser log:", d.get_log("browser"), file=sys.stderr)
        raise
    finally:
        d.quit()


if __name__ == "__main__":
    main()
