"""Headless Chromium over HTTPS and WSS, trusting the test's certificate.

Usage: tls.py BASE_URL API_KEY SPKI_SHA256_BASE64 STREAM_ID

Chromium is told to trust exactly the daemon's certificate (by the hash of its public key,
`--ignore-certificate-errors-spki-list`, the way to trust a test certificate without a
system store). The page loads `BASE_URL/healthz` over HTTPS, then opens `wss://.../api/connect`
offering the key as a subprotocol, subscribes to STREAM_ID from earliest and waits for a
result. Prints the result's data on success; exits non-zero otherwise. Called by tests/tls.rs.
"""

import json
import shutil
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

WAIT_S = 30


def main():
    base, key, spki, stream_id = sys.argv[1:5]
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        sys.exit("chromium and chromedriver are needed: run scripts/test, which installs them")
    options = Options()
    profile = tempfile.mkdtemp(prefix="streamgate-chromium-")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                f"--ignore-certificate-errors-spki-list={spki}"):
        options.add_argument(arg)
    options.binary_location = chromium
    d = webdriver.Chrome(options=options, service=Service(driver))
    try:
        d.set_script_timeout(WAIT_S)
        d.get(f"{base}/healthz")
        body = d.find_element("tag name", "body").text
        if '"ok"' not in body:
            sys.exit(f"healthz over HTTPS said {body!r}")
        wss = base.replace("https://", "wss://") + "/api/connect"
        outcome = d.execute_async_script(
            """
            const [url, key, stream, done] = arguments;
            const ws = new WebSocket(url, ["streamgate.v1", "apikey." + key]);
            ws.onopen = () => ws.send(JSON.stringify(
                {type: "subscribe", stream_id: stream, from: "earliest"}));
            ws.onmessage = (e) => {
                const f = JSON.parse(e.data);
                if (f.type === "result") { ws.close(); done({ok: true, data: f.data}); }
                if (f.type === "refused") { done({ok: false, why: e.data}); }
            };
            ws.onerror = () => done({ok: false, why: "websocket error"});
            """,
            wss, key, stream_id)
        if not outcome.get("ok"):
            sys.exit(f"WSS failed: {outcome}")
        print(json.dumps(outcome["data"], separators=(",", ":")))
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
