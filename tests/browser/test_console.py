"""The web console in headless Chromium: a streamed chat, the dashboard moving under
load, the key prompt. TOKENMILL_SCREENSHOTS=DIR saves screenshots of these fake-engine
pages; the README's come from the real model, by scripts/console_screenshots.py."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import httpx

from tests.browser.conftest import live_server
from tests.unit.server.fake_engine import FakeEngine

SCRIPT = "Rivers: the Nile, the Amazon and the Yangtze."


def screenshot(page, name: str) -> None:
    folder = os.environ.get("TOKENMILL_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def test_a_chat_streams_into_the_page_with_counts_timing_and_curl(browser_page):
    page = browser_page
    with live_server(FakeEngine(script=SCRIPT, step_delay_s=0.03, max_model_len=512)) as url:
        page.goto(url + "/ui")
        page.wait_for_selector("#model option[value='fake-model']", state="attached")
        page.fill("#max_tokens", "100")
        page.fill("#prompt", "Name three rivers.")
        # Record every length the answer takes while it streams in.
        page.evaluate(
            """() => { window.seen = new Set(); new MutationObserver(() => {
                 const a = document.querySelector('.msg.assistant');
                 if (a) window.seen.add(a.textContent.length);
               }).observe(document.getElementById('chat-log'),
                          {subtree: true, childList: true, characterData: true}); }"""
        )
        page.click("#send")
        page.wait_for_function(
            "document.getElementById('stats').textContent.includes('completion tokens')",
            timeout=20_000,
        )
        answer = page.inner_text(".msg.assistant")
        seen = page.evaluate("[...window.seen].filter(n => n > 0).length")
        stats = page.inner_text("#stats")
        curl = (
            page.inner_text("#curl")
            if page.is_visible("#curl")
            else page.evaluate("document.getElementById('curl').textContent")
        )
        screenshot(page, "console-playground.png")
    assert answer.endswith(SCRIPT), answer
    assert seen >= 5, f"the answer arrived in {seen} pieces: not streamed"
    assert "completion tokens" in stats and "first token" in stats and "finish: stop" in stats
    assert f"{url}/v1/chat/completions" in curl and '"stream": true' in curl
    assert '"max_tokens": 100' in curl


def test_the_dashboard_charts_move_under_load(browser_page):
    page = browser_page
    engine = FakeEngine(script="x" * 40, step_delay_s=0.02, max_model_len=512)
    with live_server(engine) as url:
        page.goto(url + "/ui/")
        page.click("#tab-dashboard")
        page.wait_for_function("Number(document.getElementById('chart-kv').dataset.points) >= 1")
        stop = threading.Event()

        def load():
            with httpx.Client(base_url=url, timeout=30) as client:
                while not stop.is_set():
                    body = {"prompt": "go", "max_tokens": 40, "temperature": 0.5}
                    threads = [
                        threading.Thread(
                            target=client.post, args=("/v1/completions",), kwargs={"json": body}
                        )
                        for _ in range(4)
                    ]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        try:
            page.wait_for_function(
                "Number(document.getElementById('chart-throughput').dataset.max) > 0 && "
                "Number(document.getElementById('chart-queue').dataset.max) > 0",
                timeout=30_000,
            )
            page.wait_for_function(
                "document.getElementById('m-ttft').textContent.includes('ms')", timeout=10_000
            )
            if os.environ.get("TOKENMILL_SCREENSHOTS"):  # let the charts fill a little
                page.wait_for_function(
                    "Number(document.getElementById('chart-throughput').dataset.points) >= 12",
                    timeout=60_000,
                )
            screenshot(page, "console-dashboard.png")
        finally:
            stop.set()
            loader.join(30)
        points = int(page.evaluate("document.getElementById('chart-throughput').dataset.points"))
        requests = page.inner_text("#m-requests")
        drift = page.inner_text("#m-drift")
    assert points >= 2
    assert int(requests.split(" / ")[0]) > 0
    assert drift == "off"


def test_the_dashboard_opens_on_a_server_that_already_served_requests(browser_page):
    # The first scrape has no previous one to subtract; with requests already in the
    # histograms it once threw, and the charts never drew a point.
    page = browser_page
    with live_server(FakeEngine(script="done", max_model_len=512)) as url:
        body = {"prompt": "go", "max_tokens": 4}
        assert httpx.post(url + "/v1/completions", json=body).status_code == 200
        page.goto(url + "/ui/")
        page.click("#tab-dashboard")
        page.wait_for_function(
            "Number(document.getElementById('chart-throughput').dataset.points) >= 2",
            timeout=15_000,
        )
        conn = page.inner_text("#conn")
        ttft = page.inner_text("#m-ttft")
        requests = page.inner_text("#m-requests")
    assert conn == "connected", conn
    assert "ms" in ttft, ttft
    assert requests.startswith("1 / "), requests


def test_behind_keys_it_asks_for_a_key_first(browser_page, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys.me]\nkey = "secret-key"\n')
    page = browser_page
    with live_server(FakeEngine(), keys=str(keys)) as url:
        page.goto(url + "/ui/")
        page.wait_for_selector("#key-form", state="visible")
        assert not page.is_visible("#playground")
        page.fill("#key-input", "wrong")
        page.click("#key-submit button")
        page.wait_for_function(
            "document.getElementById('key-error').textContent.includes('refused')"
        )
        page.fill("#key-input", "secret-key")
        page.click("#key-submit button")
        page.wait_for_selector("#model option[value='fake-model']", state="attached")
        assert page.is_visible("#playground") and not page.is_visible("#key-form")
