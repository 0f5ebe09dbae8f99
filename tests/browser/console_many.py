"""The console page following many streams in headless Chromium, over one connection.

Usage: console_many.py URL API_KEY STREAM_ID...

Opens the page with the key; the list shows every stream and the page follows each of them
live. Sends one record into each stream (plain HTTP, from here) and waits until every row's
live cell shows its own record. Then checks the page opened exactly one WebSocket (the client
library's /api/connect, counted by the page in body[data-connections]). Prints the number of
connections on success; exits non-zero otherwise. Called by tests/console.rs.
"""

import json
import sys
import urllib.request

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from console import WAIT_S, browser, text_of


def send(url, key, stream_id, value):
    request = urllib.request.Request(
        f"{url.rstrip('/')}/api/stream/{stream_id}/send", data=json.dumps(value).encode(),
        method="POST", headers={"X-API-Key": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as resp:
        assert resp.status == 202, resp.status


def live_cells(d):
    """stream id -> the row's live cell text."""
    return {row.get_attribute("data-stream-id"): row.find_elements(By.TAG_NAME, "td")[-1].text
            for row in d.find_elements(By.CSS_SELECTOR, "#streams tr")}


def main():
    url, key, streams = sys.argv[1], sys.argv[2], sys.argv[3:]
    d = browser()
    try:
        wait = WebDriverWait(d, WAIT_S)
        d.get(url)
        d.find_element(By.ID, "credential").send_keys(key)
        d.find_element(By.ID, "connect").click()
        wait.until(lambda d: "connected with an API key" in text_of(d, "status"))
        wait.until(lambda d: set(streams) <= set(live_cells(d)))
        for n, stream_id in enumerate(streams):
            send(url, key, stream_id, {"n": n})
        wanted = {s: json.dumps({"n": n}, separators=(",", ":")) for n, s in enumerate(streams)}
        wait.until(lambda d: all(live_cells(d).get(s) == text for s, text in wanted.items()))
        connections = d.execute_script("return document.body.dataset.connections")
        if connections != "1":
            sys.exit(f"the page opened {connections} WebSockets for {len(streams)} streams")
        errors = [e for e in d.get_log("browser")
                  if e["level"] == "SEVERE" and e["source"] != "network"]
        if errors:
            sys.exit(f"console errors: {errors}")
        print(connections)
    except Exception:
        print("status:", text_of(d, "status"), file=sys.stderr)
        print("rows:", live_cells(d), file=sys.stderr)
        print("browser log:", d.get_log("browser"), file=sys.stderr)
        raise
    finally:
        d.quit()


if __name__ == "__main__":
    main()
