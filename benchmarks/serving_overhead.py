"""CPU microseconds per chat request of the HTTP serving stack (middleware, gateway
pipeline, formatting, SSE) over the tests' zero-cost fake engine, every policy off.

Run from a source tree's root, once per tree, interleaving trees to compare them:

    PYTHONPATH=src:. python benchmarks/serving_overhead.py 200

It measures process CPU time (the app, the in-process client and the fake engine), so
other load on the machine does not count. Prints {"chat": us, "chat_stream": us}.
"""

import json
import sys
import time

from fastapi.testclient import TestClient
from tests.unit.server.fake_engine import FakeEngine

from tokenmill.server.app import build_app

try:
    from tokenmill.config import ServerConfig
except ImportError:
    from tokenmill.server.config import ServerConfig

n = int(sys.argv[1])
engine = FakeEngine()
with TestClient(build_app(ServerConfig(), lambda: engine), base_url="http://127.0.0.1") as client:
    while client.get("/ready").status_code != 200:
        time.sleep(0.01)
    model = client.get("/v1/models").json()["data"][0]["id"]
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Hello there"}],
        "max_tokens": 16,
        "temperature": 0,
    }
    stream = dict(body, stream=True)
    for _ in range(50):
        assert client.post("/v1/chat/completions", json=body).status_code == 200
    out = {}
    for name, b in (("chat", body), ("chat_stream", stream)):
        t0 = time.process_time()
        for _ in range(n):
            r = client.post("/v1/chat/completions", json=b)
            assert r.status_code == 200, r.text
        out[name] = (time.process_time() - t0) / n * 1e6
    print(json.dumps(out))
