"""`tokenmill generate`: complete prompts in-process, without a server."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from tokenmill.config import EngineConfig
from tokenmill.engine.outputs import Delta
from tokenmill.sampling_params import SamplingParams


def add_sampling_flags(parser: argparse.ArgumentParser, max_tokens: int) -> None:
    """Sampling flags shared by `generate` and `chat`. Unset ones take the model's
    defaults, as a server request that leaves them out does."""
    group = parser.add_argument_group("sampling (unset: the model's defaults, as the server)")
    group.add_argument(
        "--max-tokens",
        type=int,
        default=max_tokens,
        metavar="N",
        help=f"New tokens at most per reply [default: {max_tokens}].",
    )
    group.add_argument(
        "--temperature",
        type=float,
        default=None,
        metavar="T",
        help="0 always picks the most likely token.",
    )
    group.add_argument(
        "--top-p",
        type=float,
        default=None,
        metavar="P",
        help="Sample from the smallest set of tokens holding this much probability.",
    )
    group.add_argument(
        "--top-k",
        type=int,
        default=None,
        metavar="K",
        help="Sample from the K most likely tokens; 0 disables.",
    )
    group.add_argument(
        "--seed", type=int, default=None, metavar="N", help="Makes sampling reproducible."
    )
    group.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help="End the reply at this text (repeatable).",
    )


def sampling_params(args: argparse.Namespace, llm) -> SamplingParams:
    """SamplingParams from the flags over the model's defaults (raises
    InvalidRequestError when invalid)."""
    return llm.default_sampling_params(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        stop=list(args.stop),
    )


def load_llm(config: EngineConfig, err: TextIO = sys.stderr):
    """Loads the model (a few seconds) into an offline LLM driven on this thread."""
    from tokenmill.engine.llm import LLM

    print("tokenmill: loading the model...", file=err, flush=True)
    return LLM.from_config(config)


def read_prompt(text: str, stdin: TextIO = sys.stdin) -> str:
    """The prompt for a PROMPT argument: "-" reads stdin, without the final newline that
    terminals and `echo` add (it would become a token of the prompt)."""
    if text != "-":
        return text
    data = stdin.read()
    return data.removesuffix("\n")


def generate(args: argparse.Namespace, config: EngineConfig, out: TextIO = sys.stdout) -> int:
    """Completes each prompt; one prompt streams as it is produced. Returns the exit code."""
    texts = [read_prompt(p) for p in args.prompts]
    llm = load_llm(config)
    params = sampling_params(args, llm)
    if args.chat:
        convs = []
        for text in texts:
            messages = [{"role": "system", "content": args.system}] if args.system else []
            convs.append([*messages, {"role": "user", "content": text}])
        run = lambda on_delta=None: llm.chat(convs, params, on_delta)
    else:
        run = lambda on_delta=None: llm.generate(texts, params, on_delta)

    if len(texts) == 1:

        def show(_: int, delta: Delta) -> None:
            out.write(delta.text)
            out.flush()

        run(show)
        out.write("\n")
        return 0
    results = run()
    out.writelines(f"--- [{i}] {texts[i]!r}\n{r.outputs[0].text}\n" for i, r in enumerate(results))
    return 0
