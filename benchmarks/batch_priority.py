"""Interactive time to first token with and without a large batch running.

Starts `tokenmill serve` on a free loopback port with a fresh --state-dir, measures the
TTFT of sequential streaming chat requests while the server is idle, then submits a batch
(through the openai SDK's files/batches calls) and measures the same requests while the
batch runs. Prints both medians and their ratio and writes them as JSON.

    python benchmarks/batch_priority.py --batch-lines 200 --requests 10 \
        --out docs/batch_priority.json [-- extra tokenmill serve flags]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

PROMPT = "In one sentence, what is a lighthouse for?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ttft(client: openai.OpenAI, model: str) -> float:
    start = time.perf_counter()
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=4,
        stream=True,
    )
    first = None
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
    assert first is not None, "no content streamed"
    return first


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-lines", type=int, default=200)
    ap.add_argument("--batch-max-tokens", type=int, default=48)
    ap.add_argument("--requests", type=int, default=10, help="Interactive requests per phase.")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("serve_flags", nargs="*", help="Extra `tokenmill serve` flags (after --).")
    args = ap.parse_args()

    port = free_port()
    state = tempfile.mkdtemp(prefix="tokenmill-batch-bench-")
    log = open(Path(state) / "serve.log", "wb")  # noqa: SIM115 - lives as long as the server
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENMILL_")}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tokenmill.cli.main",
            "serve",
            "--port",
            str(port),
            "--state-dir",
            state,
            *args.serve_flags,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 600
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "server did not start"
            try:
                if httpx.get(f"{base}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        model = client.models.list().data[0].id
        ttft(client, model)  # warm-up
        idle = [ttft(client, model) for _ in range(args.requests)]

        lines = [
            json.dumps(
                {
                    "custom_id": f"b{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": model,
                        "max_tokens": args.batch_max_tokens,
                        "messages": [{"role": "user", "content": f"Tell story {i}."}],
                    },
                }
            )
            for i in range(args.batch_lines)
        ]
        f = client.files.create(file=("b.jsonl", "\n".join(lines).encode()), purpose="batch")
        batch = client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while client.batches.retrieve(batch.id).request_counts.completed < 1:
            time.sleep(0.2)
        busy = []
        for _ in range(args.requests):
            busy.append(ttft(client, model))
            status = client.batches.retrieve(batch.id)
            assert status.status == "in_progress", f"the batch ended early: {status.status}"
        counts = client.batches.retrieve(batch.id).request_counts
        client.batches.cancel(batch.id)
    finally:
        server.terminate()
        server.wait(60)
        log.close()
    result = {
        "idle_ttft_p50_s": statistics.median(idle),
        "busy_ttft_p50_s": statistics.median(busy),
        "ratio": statistics.median(busy) / statistics.median(idle),
        "idle_ttft_s": idle,
        "busy_ttft_s": busy,
        "batch_lines": args.batch_lines,
        "batch_done_when_measured": counts.completed + counts.failed,
        "serve_flags": args.serve_flags,
    }
    print(
        f"interactive TTFT p50: idle {result['idle_ttft_p50_s'] * 1000:.0f} ms, with a "
        f"{args.batch_lines}-line batch running {result['busy_ttft_p50_s'] * 1000:.0f} ms "
        f"(x{result['ratio']:.2f})"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
