"""The README's console screenshots, from `tokenmill serve` on the default model.

Starts the real server (the packaged SmolLM2 unless --model says otherwise) on a free
loopback port, with drift watching on so its tile shows. In headless Chromium
(Playwright driving /usr/bin/chromium) it then

1. sends one chat in the playground and waits for the streamed answer and its counts:
   docs/img/console-playground.png;
2. puts a bounded loopback load on the server (--clients closed-loop clients sending
   varied sampled chats, every fourth one a repeated greedy prompt that the response
   cache answers), waits until the dashboard's charts hold --points samples with
   tokens flowing, and saves docs/img/console-dashboard.png.

It fails, leaving no screenshot of a still dashboard, if the charts have not moved
within --max-load-s. The server and the load stop before it returns.

    python scripts/console_screenshots.py [--out docs/img] [--clients 4] [--points 40]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

import httpx

from tokenmill.bench.peers import ServerProcess, ServerSpec, free_port

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
PROMPTS = (
    "Give me three tips for keeping a sourdough starter alive.",
    "What is the difference between weather and climate?",
    "Write a haiku about a train station at night.",
    "How do I politely decline a meeting invitation?",
    "Explain what a hash table is to a ten-year-old.",
    "Suggest a name for a small bakery by the sea.",
    "Why is the sky blue? Answer in two sentences.",
    "List four things to pack for a day hike.",
)
STATE_JS = """() => ({
  throughput: {...document.getElementById('chart-throughput').dataset},
  queue: {...document.getElementById('chart-queue').dataset},
  conn: document.getElementById('conn').textContent,
})"""
CACHED = "Name the planets of the solar system."


class Load:
    """Closed-loop chat clients against `url` until stopped; counts what they got."""

    def __init__(self, url: str, model: str, clients: int) -> None:
        self.url, self.model, self.clients = url, model, clients
        self.stop = threading.Event()
        self.ok = self.failed = 0
        self._lock = threading.Lock()
        self._n = itertools.count()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def _client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=300) as client:
            while not self.stop.is_set():
                i = next(self._n)
                body = {"model": self.model, "max_tokens": 48}
                if i % 4 == 3:
                    body |= {"messages": [{"role": "user", "content": CACHED}], "temperature": 0}
                else:
                    prompt = PROMPTS[i % len(PROMPTS)]
                    body |= {"messages": [{"role": "user", "content": prompt}]}
                status = client.post("/v1/chat/completions", json=body).status_code
                with self._lock:
                    self.ok += status == 200
                    self.failed += status != 200

    def __enter__(self) -> Self:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(300)


def playground(page, url: str, out: Path) -> str:
    """One streamed chat in the playground; saves its screenshot, returns the stats line."""
    page.goto(url + "/ui/")
    page.wait_for_selector("#model option", state="attached")
    page.fill("#max_tokens", "96")
    page.fill("#prompt", "Explain in three sentences what a KV cache does in an LLM server.")
    page.click("#send")
    page.wait_for_function(
        "document.getElementById('stats').textContent.includes('completion tokens')",
        timeout=300_000,
    )
    page.screenshot(path=str(out / "console-playground.png"), full_page=True)
    return page.inner_text("#stats")


def dashboard(page, url: str, model: str, args: argparse.Namespace) -> dict:
    """The dashboard under load; saves its screenshot once the charts have moved."""
    page.goto(url + "/ui/")
    page.click("#tab-dashboard")
    start = time.monotonic()
    with Load(url, model, args.clients) as load:
        while True:
            state = page.evaluate(STATE_JS)
            points = int(state["throughput"].get("points") or 0)
            tokens = float(state["throughput"].get("max") or 0)
            running = float(state["queue"].get("max") or 0)
            if points >= args.points and tokens > 0 and running > 0:
                break
            if time.monotonic() - start > args.max_load_s:
                raise SystemExit(f"the dashboard did not move within {args.max_load_s} s: {state}")
            time.sleep(1)
        page.wait_for_function("!document.getElementById('m-ttft').textContent.startsWith('-')")
        page.screenshot(path=str(args.out / "console-dashboard.png"), full_page=True)
        shown = {k: page.inner_text(f"#m-{k}") for k in ("throughput", "queue", "kv", "ttft")}
    shown |= {"requests_ok": load.ok, "requests_failed": load.failed}
    shown["load_s"] = round(time.monotonic() - start, 1)
    return shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--points", type=int, default=40, help="chart samples to wait for")
    parser.add_argument("--max-load-s", type=int, default=240)
    parser.add_argument("--model", help="a model path for `tokenmill serve --model`")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [sys.executable, "-m", "tokenmill.cli.main", "serve", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--drift", "true"]
    argv += ["--model", args.model] if args.model else []
    logs = Path(tempfile.mkdtemp(prefix="tokenmill-screens-"))
    profile = tempfile.mkdtemp(prefix="tokenmill-chromium-")
    with ServerProcess(ServerSpec("tokenmill", argv, port), logs) as server, sync_playwright() as p:
        model = httpx.get(server.spec.url + "/v1/models").json()["data"][0]["id"]
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1200, "height": 860},
        )
        try:
            page = context.new_page()
            stats = playground(page, server.spec.url, args.out)
            shown = dashboard(page, server.spec.url, model, args)
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)
    print(f"model {model}; playground: {stats}")
    print(f"dashboard: {shown}")
    print(f"wrote {args.out / 'console-playground.png'} and {args.out / 'console-dashboard.png'}")


if __name__ == "__main__":
    main()
