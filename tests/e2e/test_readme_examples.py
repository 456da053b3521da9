"""The README's own examples, run as a new user would, print sensible answers."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.test_cli import run_cli

pytestmark = pytest.mark.slow
README = Path(__file__).parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def run_block(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - our own README
    return out.getvalue()


def test_the_openai_client_example_answers_paris(server: ServerProcess):
    (block,) = [b for b in python_blocks() if "OpenAI(base_url=" in b]
    code = block.replace("http://127.0.0.1:8000/v1", f"{server.url}/v1")
    printed = run_block(code)
    assert "Paris" in printed, printed


def test_the_offline_llm_example_answers_paris():
    (block,) = [b for b in python_blocks() if "LLM()" in b]
    printed = run_block(block)
    chat_line = printed.strip().splitlines()[0]
    assert "Paris" in chat_line, printed
    assert printed.count("Paris") >= 2, printed  # the greedy completion names it too


def test_the_cli_example_prints_a_sensible_answer():
    (line,) = [x for x in README.read_text().splitlines() if "generate --chat" in x]
    question = line.split('"')[1]
    args = line.split("tokenmill ", 1)[1].split()
    result = run_cli(*args, stdin=question + "\n")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
