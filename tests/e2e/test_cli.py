"""`tokenmill generate` and `tokenmill chat` work without a server."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.e2e.conftest import ServerProcess, tokenmill_command

pytestmark = pytest.mark.slow


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENMILL_")}
    return subprocess.run(
        [*tokenmill_command(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )


def test_generate_prints_the_greedy_completion_the_server_gives(
    server: ServerProcess, model_name: str
):
    prompt = "The capital of France is"
    result = run_cli("generate", prompt, "--max-tokens", "4", "--temperature", "0")
    assert result.returncode == 0, result.stderr
    served = server.client().completions.create(
        model=model_name, prompt=prompt, max_tokens=4, temperature=0
    )
    assert result.stdout == served.choices[0].text + "\n"


def test_chat_streams_keeps_history_and_obeys_commands():
    script = "Hi, my name is Ada.\n/reset\n\nWhat is 2+2?\n/exit\nnever read\n"
    result = run_cli("chat", "--max-tokens", "4", "--temperature", "0", stdin=script)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("tokenmill chat with smollm2-135m-instruct.")
    assert "(history cleared)" in out
    replies = [part.split("\n", 1)[0] for part in out.split("model> ")[1:]]
    assert len(replies) == 2 and all(r.strip() for r in replies)
