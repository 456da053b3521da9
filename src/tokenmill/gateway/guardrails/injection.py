"""Prompt-injection scoring with the packaged NanoGuard classifier.

NanoGuard (`metatronnanoguard`) is a 4-layer bidirectional transformer (16.8M
parameters) over a tiktoken BPE vocabulary of 8192, with a 2-way head; the
probability of its "injection" class is the score. Its context is 512 tokens: a
longer text is scored in overlapping windows (the package's own scanner truncates),
and a text over `chunk_tokens` also in chunks of whole sentences, taking the highest
score, so an instruction buried in a long message is not averaged away.

Score the user's original text, never the redacted one: the classifier reads
placeholders such as `<EMAIL_ADDRESS>` as injection markup (see the tests and
docs/guardrails.md).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import pickle
import threading
from dataclasses import dataclass

from tokenmill.gateway.guardrails.errors import GuardrailUnavailableError
from tokenmill.gateway.guardrails.segments import split_segments

NANOGUARD_PACKAGE = "metatronnanoguard==0.1.0"
_WINDOW_OVERLAP = 64


@dataclass(frozen=True)
class InjectionConfig:
    """How prompt injection is scored."""

    threshold: float = 0.5
    """A text scoring at or above this is an injection attempt."""
    pad_to: int = 64
    """Windows are padded to a multiple of this many tokens. The model attends to
    its padding (it has no attention mask), so a score depends slightly on it; 512
    reproduces the package's scanner exactly at eight times the cost of 64, and the
    two agree on the evaluation set (docs/guardrails.md). A fixed rule also makes a
    text's score independent of what it is batched with."""
    batch_size: int = 16
    """Windows scored in one forward pass."""
    chunk_tokens: int | None = 128
    """A text longer than this many tokens is also scored in chunks of whole sentences
    of at most about this many tokens, and takes its highest score. The model averages
    over its whole input, so one injected sentence inside a long document is diluted
    below the threshold; docs/guardrails.md measures recall on such documents with and
    without chunks. None scores whole windows only."""

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 1 <= self.pad_to <= 512:
            raise ValueError(f"pad_to must be in [1, 512], got {self.pad_to}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.chunk_tokens is not None and not 16 <= self.chunk_tokens <= 511:
            raise ValueError(f"chunk_tokens must be in [16, 511] or None, got {self.chunk_tokens}")


@dataclass(frozen=True)
class InjectionVerdict:
    """The classifier's decision on one text, as the gateway records it."""

    score: float
    """Probability of injection, in [0, 1]."""
    flagged: bool
    """Whether `score` reached the configured threshold."""


class _EncodingOnlyUnpickler(pickle.Unpickler):
    """Unpickles the bundled tokenizer, refusing any class but tiktoken's Encoding.

    A pickle can run arbitrary code; this one only needs to rebuild a tiktoken
    Encoding from its ranks and pattern, so nothing else is allowed to load.
    """

    def find_class(self, module: str, name: str):
        if (module, name) == ("tiktoken.core", "Encoding"):
            import tiktoken.core

            return tiktoken.core.Encoding
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from tokenizer.pkl")


class InjectionClassifier:
    """Scores texts for prompt injection; loads the model on first use.

    Construction is cheap; the first `score` (or `load`) loads the weights under a
    lock. Scoring is then read-only and may run from several threads.
    """

    def __init__(self, config: InjectionConfig | None = None) -> None:
        self.config = config or InjectionConfig()
        self._lock = threading.Lock()
        self._model = None

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._model is not None

    def load(self) -> None:
        """Load the tokenizer and weights if not loaded yet; idempotent, thread-safe."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            for module, install in (
                ("nanoguard", f"--no-deps {NANOGUARD_PACKAGE}"),
                ("tiktoken", "tiktoken==0.14.0"),
            ):
                if importlib.util.find_spec(module) is None:
                    raise GuardrailUnavailableError(
                        f"The injection guardrail needs {module!r}: pip install {install}"
                    )
            from nanoguard.model import Classifier

            assets = importlib.resources.files("nanoguard.assets")
            with assets.joinpath("tokenizer.pkl").open("rb") as handle:
                encoding = _EncodingOnlyUnpickler(handle).load()
            self._bos = encoding.encode_single_token("<|reserved_0|>")
            self._pad = encoding.encode_single_token("<|reserved_1|>")
            with importlib.resources.as_file(assets.joinpath("model.pt")) as path:
                model, _, model_config = Classifier.from_checkpoint(str(path), device="cpu")
            self._window = model_config.sequence_len - 1  # one position for BOS
            self._encoding = encoding
            self._model = model

    def score(self, texts: list[str]) -> list[float]:
        """Injection probability of each text, in order; batched across texts."""
        self.load()
        windows: list[tuple[int, list[int]]] = []
        for index, text in enumerate(texts):
            for part in [text, *self._chunks(text)]:
                windows += [(index, window) for window in self._windows(part)]
        scores = [0.0] * len(texts)
        for index, probability in self._run(windows):
            scores[index] = max(scores[index], probability)
        return scores

    def check(self, text: str) -> InjectionVerdict:
        """Score one text and compare it with the threshold."""
        (score,) = self.score([text])
        return InjectionVerdict(score=score, flagged=score >= self.config.threshold)

    def _chunks(self, text: str) -> list[str]:
        """Consecutive sentences packed into chunks of at most `chunk_tokens` tokens
        (a longer sentence is a chunk of its own); none for a text that short."""
        limit = self.config.chunk_tokens
        if limit is None or len(self._encoding.encode_ordinary(text)) <= limit:
            return []
        chunks, current, tokens, start = [], "", 0, 0
        for end in split_segments(text):
            sentence = text[start:end]
            count = len(self._encoding.encode_ordinary(sentence))
            if current and tokens + count > limit:
                chunks.append(current)
                current, tokens = "", 0
            current, tokens, start = current + sentence, tokens + count, end
        return [*chunks, current] if chunks else []  # one chunk would be the text again

    def _windows(self, text: str) -> list[list[int]]:
        ids = self._encoding.encode_ordinary(text)
        windows, start = [], 0
        while True:
            windows.append([self._bos, *ids[start : start + self._window]])
            if start + self._window >= len(ids):
                return windows
            start += self._window - _WINDOW_OVERLAP

    def _run(self, windows: list[tuple[int, list[int]]]) -> list[tuple[int, float]]:
        import torch

        pad_to = self.config.pad_to
        # Group windows by padded length so that padding follows from each window
        # alone, then run each group in batches.
        groups: dict[int, list[tuple[int, list[int]]]] = {}
        for item in windows:
            length = min(-(-len(item[1]) // pad_to) * pad_to, self._window + 1)
            groups.setdefault(length, []).append(item)
        results: list[tuple[int, float]] = []
        size = self.config.batch_size
        for length, items in groups.items():
            for first in range(0, len(items), size):
                batch = items[first : first + size]
                ids = torch.full((len(batch), length), self._pad, dtype=torch.long)  # (B, T)
                mask = torch.zeros((len(batch), length), dtype=torch.bool)  # (B, T)
                for row, (_, window) in enumerate(batch):
                    ids[row, : len(window)] = torch.tensor(window)
                    mask[row, : len(window)] = True
                with torch.inference_mode():
                    logits = self._model(ids, mask)  # (B, 2)
                probabilities = torch.softmax(logits.float(), dim=-1)[:, 1].tolist()
                results += [(index, p) for (index, _), p in zip(batch, probabilities)]
        return results


_shared: dict[InjectionConfig, InjectionClassifier] = {}
_shared_lock = threading.Lock()


def shared_injection_classifier(config: InjectionConfig | None = None) -> InjectionClassifier:
    """The process's classifier for `config`, created on first call (not loaded)."""
    config = config or InjectionConfig()
    with _shared_lock:
        classifier = _shared.get(config)
        if classifier is None:
            classifier = _shared[config] = InjectionClassifier(config)
        return classifier
