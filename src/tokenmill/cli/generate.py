"""`tokenmill generate`: complete prompts in-process, without a server."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable
from typing import TextIO

from tokenmill.config import EngineConfig
from tokenmill.engine.outputs import Delta, RequestOutput
from tokenmill.sampling_params import SamplingParams

_ids = itertools.count()


def add_sampling_flags(parser: argparse.ArgumentParser, max_tokens: int) -> None:
    """Sampling flags shared by `generate` and `chat`."""
    group = parser.add_argument_group("sampling")
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
        default=0.7,
        metavar="T",
        help="0 always picks the most likely token [default: 0.7].",
    )
    group.add_argument(
        "--top-p",
        type=float,
        default=0.9,
        metavar="P",
        help="Sample from the smallest set of tokens holding this much probability [default: 0.9].",
    )
    group.add_argument(
        "--top-k",
        type=int,
        default=0,
        metavar="K",
        help="Sample from the K most likely tokens; 0 disables [default: 0].",
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


def sampling_params(args: argparse.Namespace) -> SamplingParams:
    """SamplingParams from the sampling flags (raises InvalidRequestError when invalid)."""
    return SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        stop=list(args.stop),
    )


def run_to_completion(
    core,
    prompts: list[list[int]],
    params: SamplingParams,
    on_delta: Callable[[int, Delta], None] | None = None,
) -> list[RequestOutput]:
    """Adds every prompt to the engine core, steps until all finish, and returns the final
    outputs in prompt order. `on_delta(prompt_index, delta)` sees text as it is produced.
    Ctrl-C aborts what is unfinished, then re-raises."""
    ids = [f"cli-{next(_ids)}" for _ in prompts]
    index = {rid: i for i, rid in enumerate(ids)}
    final: dict[str, RequestOutput] = {}
    try:
        for rid, token_ids in zip(ids, prompts):
            core.add_request(rid, params, prompt_token_ids=token_ids)
        while len(final) < len(ids) and core.has_unfinished():
            for out in core.step():
                if on_delta is not None:
                    for delta in out.deltas:
                        on_delta(index[out.request_id], delta)
                if out.finished:
                    final[out.request_id] = out
    except BaseException:
        for rid in ids:
            if rid not in final:
                core.abort(rid)
        raise
    return [final[rid] for rid in ids]


def load_core(config: EngineConfig, err: TextIO = sys.stderr):
    """Loads the model (a few seconds) and returns an EngineCore driven on this thread."""
    from tokenmill.engine.core import EngineCore

    print("tokenmill: loading the model...", file=err, flush=True)
    return EngineCore(config)


def generate(args: argparse.Namespace, config: EngineConfig, out: TextIO = sys.stdout) -> int:
    """Completes each prompt; one prompt streams as it is produced. Returns the exit code."""
    params = sampling_params(args)
    texts = [sys.stdin.read() if p == "-" else p for p in args.prompts]
    core = load_core(config)
    tok = core.tokenizer
    if args.chat:
        prompts = []
        for text in texts:
            messages = [{"role": "system", "content": args.system}] if args.system else []
            messages.append({"role": "user", "content": text})
            rendered = tok.apply_chat_template(messages, add_generation_prompt=True)
            prompts.append(tok.encode(rendered, add_special_tokens=False))
    else:
        prompts = [tok.encode(text, add_special_tokens=True) for text in texts]

    if len(prompts) == 1:

        def show(_: int, delta: Delta) -> None:
            out.write(delta.text)
            out.flush()

        run_to_completion(core, prompts, params, on_delta=show)
        out.write("\n")
        return 0
    results = run_to_completion(core, prompts, params)
    out.writelines(f"--- [{i}] {texts[i]!r}\n{r.outputs[0].text}\n" for i, r in enumerate(results))
    return 0
