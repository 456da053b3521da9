"""Starting and stopping peer servers: readiness, early exits, cleanup."""

from __future__ import annotations

import sys
import textwrap

import httpx
import pytest

from tokenmill.bench.peers import PeerUnavailable, ServerProcess, ServerSpec, free_port

# /ready answers 503 twice, then 200; /health is live from the start (as in tokenmill).
FAKE_SERVER = textwrap.dedent(
    """
    import sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    calls = {"ready": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/ready":
                calls["ready"] += 1
                code = 200 if calls["ready"] > 2 else 503
            elif self.path == "/health":
                code = 200
            else:
                code = 404
            self.send_response(code)
            self.end_headers()
            self.wfile.write(str(calls["ready"]).encode())

        def log_message(self, *args):
            pass

    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """
)


def test_ready_waits_for_the_ready_endpoint_not_liveness(tmp_path):
    script = tmp_path / "fake.py"
    script.write_text(FAKE_SERVER)
    port = free_port()
    spec = ServerSpec("fake", [sys.executable, str(script), str(port)], port, 20.0)
    with ServerProcess(spec, tmp_path) as server:
        proc = server._proc
        assert httpx.get(spec.url + "/ready").status_code == 200
        assert int(httpx.get(spec.url + "/ready").text) >= 4
    assert proc is not None and proc.poll() is not None  # stopped on exit


def test_a_server_that_exits_while_starting_is_reported_with_its_log(tmp_path):
    port = free_port()
    argv = [sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"]
    server = ServerProcess(ServerSpec("broken", argv, port, 20.0), tmp_path)
    with pytest.raises(PeerUnavailable, match=r"exited with status 3(.|\n)*no model here"):
        server.__enter__()


def test_a_missing_binary_is_reported(tmp_path):
    spec = ServerSpec("ghost", [str(tmp_path / "no-such-binary")], free_port(), 5.0)
    with pytest.raises(PeerUnavailable, match="did not start"), ServerProcess(spec, tmp_path):
        pass
