"""`tokenmill chat`: an interactive terminal chat that streams and keeps the history."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from tokenmill.cli.generate import load_llm, sampling_params
from tokenmill.config import EngineConfig
from tokenmill.engine.outputs import Delta
from tokenmill.errors import TokenmillError

HELP = "Type a message and press Enter. /reset clears the history, /exit (or Ctrl-D) quits."


class ChatSession:
    """The conversation so far and how to extend it. `reply` mutates the history only
    when a reply completes, so a failed or interrupted turn leaves it as it was."""

    def __init__(self, llm, params, system: str | None = None):
        self.llm = llm
        self.params = params
        self.system = system
        self.history: list[dict[str, str]] = []
        self.reset()

    def reset(self) -> None:
        """Forgets every turn (keeps the system prompt)."""
        self.history = [{"role": "system", "content": self.system}] if self.system else []

    def reply(self, user_text: str, out: TextIO) -> str:
        """Streams the model's answer to `user_text` onto `out` and records the turn."""
        messages = [*self.history, {"role": "user", "content": user_text}]

        def show(_: int, delta: Delta) -> None:
            out.write(delta.text)
            out.flush()

        (result,) = self.llm.chat(messages, self.params, on_delta=show)
        text = result.outputs[0].text
        self.history = [*messages, {"role": "assistant", "content": text}]
        return text


def chat(
    args: argparse.Namespace,
    config: EngineConfig,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
) -> int:
    """Runs the read-reply loop until /exit or end of input. Returns the exit code."""
    llm = load_llm(config)
    params = sampling_params(args, llm)
    session = ChatSession(llm, params, args.system)
    interactive = stdin.isatty()
    out.write(f"tokenmill chat with {llm.engine.model_name}. {HELP}\n")
    while True:
        line = _read_line(stdin, interactive)
        if line is None:
            out.write("\n")
            return 0
        text = line.strip()
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            session.reset()
            out.write("(history cleared)\n")
            continue
        if text in ("/help", "/?"):
            out.write(HELP + "\n")
            continue
        if not text:
            continue
        out.write("model> ")
        out.flush()
        try:
            session.reply(text, out)
        except KeyboardInterrupt:
            out.write("\n(interrupted; this turn is not kept)\n")
            continue
        except TokenmillError as exc:
            out.write(f"\n(error: {exc.message} Use /reset to start a fresh conversation.)\n")
            continue
        out.write("\n")


def _read_line(stdin: TextIO, interactive: bool) -> str | None:
    """The next user line; None at end of input or Ctrl-C at the prompt."""
    try:
        if interactive:
            return input("\nyou> ")
        line = stdin.readline()
        return line or None
    except (EOFError, KeyboardInterrupt):
        return None
