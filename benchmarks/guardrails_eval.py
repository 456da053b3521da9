"""Measure the guardrails' detection quality and added latency on the labelled sets.

    python benchmarks/guardrails_eval.py [--out docs/guardrails.md] [--repeats 3]

Reads benchmarks/data/guardrails_pii.txt and guardrails_injection.txt, runs every PII
backend and the injection classifier, and writes a Markdown report (and a JSON file
beside it) with precision, recall and F1 per policy and per entity type, and the
latency each adds to a request (p50/p95, warm models, one thread, this CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from tokenmill.bench.cpu import detect
from tokenmill.gateway.guardrails.injection import InjectionClassifier, InjectionConfig
from tokenmill.gateway.guardrails.patterns import iban_valid, luhn_valid
from tokenmill.gateway.guardrails.pii import PiiConfig, PiiDetector
from tokenmill.gateway.guardrails.spans import ENTITY_TYPES, PiiSpan
from tokenmill.gateway.guardrails.stream import StreamRedactor

DATA = ROOT / "benchmarks" / "data"
DESIGN = """
## How the detectors work

- **PII** (`tokenmill.gateway.guardrails.PiiDetector`): a text is cut into segments
  (sentence ends, line breaks, at most 400 characters), each segment is scanned whole by
  the backend, and overlapping spans are merged before each is replaced by
  `<ENTITY_TYPE>`. Two backends: `rampart` (the packaged Rampart NER model, 4-bit ONNX,
  for names and phone numbers, plus checksum-validated patterns for emails, cards
  (Luhn and issuer prefix), IBANs (country length and mod-97) and IP addresses (parsed
  by `ipaddress`)), and `presidio` (Presidio's analyzer: its recognizers for the same six
  types, spaCy's `en_core_web_sm` NER for names, with the email check kept offline).
- **Streaming** (`StreamRedactor`): output deltas are buffered until their segment's
  end is decided, then the segment is scanned and released redacted. The segment rule
  is prefix-stable, so the streamed result equals the whole-text redaction for every
  split into deltas (property-tested with random splits on the PII set), and no
  character of a span is ever released early. A stream holds back at most 400
  characters (one unfinished segment); each delta costs a boundary search over the
  held text and, when a segment completes, one scan of that segment only.
- **Injection** (`InjectionClassifier`): NanoGuard's probability of the injection
  class; a text longer than the model's 512 tokens is scored in overlapping windows
  and takes the highest. Run it on the user's original text (see the last section).
"""
MARK = re.compile(r"\{\{(EMAIL|PHONE|CARD|IBAN|IP|PERSON)\|(.+?)\}\}")
SHORT_TYPES = {
    "EMAIL": "EMAIL_ADDRESS",
    "PHONE": "PHONE_NUMBER",
    "CARD": "CREDIT_CARD",
    "IBAN": "IBAN_CODE",
    "IP": "IP_ADDRESS",
    "PERSON": "PERSON",
}


@dataclass(frozen=True)
class PiiExample:
    text: str
    gold: tuple[PiiSpan, ...]


def parse_marked(line: str) -> PiiExample:
    """Strip `{{TYPE|text}}` marks from a line, returning the text and its gold spans."""
    text, gold, cursor = [], [], 0
    length = 0
    for match in MARK.finditer(line):
        text.append(line[cursor : match.start()])
        length += match.start() - cursor
        value = match.group(2)
        gold.append(PiiSpan(length, length + len(value), SHORT_TYPES[match.group(1)]))
        text.append(value)
        length += len(value)
        cursor = match.end()
    text.append(line[cursor:])
    return PiiExample("".join(text), tuple(gold))


def load_pii() -> list[PiiExample]:
    lines = (DATA / "guardrails_pii.txt").read_text().splitlines()
    examples = [parse_marked(line) for line in lines if line and not line.startswith("#")]
    for example in examples:  # the set's own numbers must be real-looking, or it lies
        for span in example.gold:
            value = re.sub(r"[ -]", "", example.text[span.start : span.end])
            if span.entity_type == "CREDIT_CARD" and not luhn_valid(value):
                raise ValueError(f"gold card fails Luhn: {example.text!r}")
            if span.entity_type == "IBAN_CODE" and not iban_valid(value):
                raise ValueError(f"gold IBAN fails mod-97: {example.text!r}")
    return examples


def load_injection() -> list[tuple[str, bool]]:
    rows = []
    for line in (DATA / "guardrails_injection.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        label, text = line.split("\t", 1)
        rows.append((text.replace("\\n", "\n"), label == "INJECTION"))
    return rows


def prf(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def score_pii(examples: list[PiiExample], predictions: list[list[PiiSpan]]) -> dict:
    """Span-level scores: a prediction matches an unmatched gold span of the same type
    that it overlaps ("overlap"), or has the same boundaries ("exact")."""
    counts = {t: [0, 0, 0] for t in ENTITY_TYPES}
    exact = [0, 0, 0]
    gold_chars = covered_chars = 0
    negatives_with_fp = 0
    for example, predicted in zip(examples, predictions):
        unmatched = list(example.gold)
        for span in predicted:
            hit = next(
                (
                    g
                    for g in unmatched
                    if g.entity_type == span.entity_type
                    and span.start < g.end
                    and g.start < span.end
                ),
                None,
            )
            if hit is None:
                counts[span.entity_type][1] += 1
            else:
                counts[span.entity_type][0] += 1
                unmatched.remove(hit)
        for gold in unmatched:
            counts[gold.entity_type][2] += 1
        gold_set = {(g.start, g.end, g.entity_type) for g in example.gold}
        pred_set = {(p.start, p.end, p.entity_type) for p in predicted}
        exact[0] += len(gold_set & pred_set)
        exact[1] += len(pred_set - gold_set)
        exact[2] += len(gold_set - pred_set)
        for gold in example.gold:
            gold_chars += gold.end - gold.start
            covered_chars += sum(
                1
                for i in range(gold.start, gold.end)
                if any(p.start <= i < p.end for p in predicted)
            )
        if not example.gold and predicted:
            negatives_with_fp += 1
    totals = [sum(c[i] for c in counts.values()) for i in range(3)]
    negatives = sum(1 for e in examples if not e.gold)
    return {
        "per_type": {t: prf(*c) for t, c in counts.items()},
        "overlap": prf(*totals),
        "exact": prf(*exact),
        "gold_char_coverage": covered_chars / gold_chars,
        "negatives_with_false_positive": f"{negatives_with_fp}/{negatives}",
    }


DEFAULT_INJECTION = "pad_to=64, chunks of 128 tokens (default)"
INJECTION_SETTINGS = {
    "pad_to=512, whole windows (the package's scanner)": InjectionConfig(
        pad_to=512, chunk_tokens=None
    ),
    "pad_to=64, whole windows": InjectionConfig(pad_to=64, chunk_tokens=None),
    DEFAULT_INJECTION: InjectionConfig(),
}


def binary_scores(predicted: list[bool], labels: list[bool]) -> dict:
    tp = sum(p and y for p, y in zip(predicted, labels))
    fp = sum(p and not y for p, y in zip(predicted, labels))
    fn = sum(y and not p for p, y in zip(predicted, labels))
    negatives = sum(not y for y in labels)
    return {**prf(tp, fp, fn), "false_positive_rate": fp / negatives if negatives else 0.0}


def long_documents(
    rows: list[tuple[str, bool]], fillers: list[str], sentences: int = 16, seed: int = 7
) -> tuple[list[str], list[bool]]:
    """Each example of the injection set inside a document of `sentences` neutral
    sentences (the PII set's negatives), at a random sentence boundary: an attack hidden
    in a pasted document, and the same for a benign request."""
    rng = random.Random(seed)
    texts, labels = [], []
    for text, label in rows:
        body = rng.sample(fillers, sentences)
        body.insert(rng.randrange(sentences + 1), text)
        texts.append(" ".join(body))
        labels.append(label)
    return texts, labels


def percentiles(samples: list[tuple[float, float]]) -> dict:
    """p50/p95 of wall time and of CPU time, in milliseconds."""
    result: dict = {"n": len(samples)}
    for name, values in (("", [w for w, _ in samples]), ("cpu_", [c for _, c in samples])):
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        result[f"{name}p50_ms"] = statistics.median(ordered) * 1e3
        result[f"{name}p95_ms"] = p95 * 1e3
    return result


def chat_prompts(texts: list[str], target_chars: int = 600) -> list[str]:
    """Join consecutive examples into prompts of typical chat length (~600 chars)."""
    prompts, current = [], ""
    for text in texts:
        current = f"{current} {text}".strip()
        if len(current) >= target_chars:
            prompts.append(current)
            current = ""
    return prompts


def timed(function, argument) -> tuple[float, float]:
    """Wall and CPU seconds (all threads of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function(argument)
    return time.perf_counter() - wall, time.process_time() - cpu


def stream_once(detector: PiiDetector, text: str, delta_chars: int = 4) -> str:
    redactor = StreamRedactor(detector)
    out = [redactor.feed(text[i : i + delta_chars]) for i in range(0, len(text), delta_chars)]
    return "".join(out) + redactor.flush()


def evaluate(repeats: int) -> dict:
    import torch

    torch.set_num_threads(1)
    pii_examples = load_pii()
    injection_rows = load_injection()
    prompts = chat_prompts([e.text for e in pii_examples])
    report: dict = {
        "cpu": detect().model,
        "cores": os.cpu_count(),
        "load_average_at_start": os.getloadavg()[0],
        "threads": "torch 1 thread; onnxruntime 1 intra-op thread; spaCy/numpy default",
        "pii_examples": len(pii_examples),
        "pii_positive_examples": sum(1 for e in pii_examples if e.gold),
        "pii_gold_spans": sum(len(e.gold) for e in pii_examples),
        "injection_examples": len(injection_rows),
        "injection_positive_examples": sum(1 for _, y in injection_rows if y),
        "chat_prompts": len(prompts),
        "chat_prompt_mean_chars": statistics.mean(len(p) for p in prompts),
        "pii": {},
        "injection": {},
    }

    detectors = {name: PiiDetector(PiiConfig(backend=name)) for name in ("presidio", "rampart")}
    for name, detector in detectors.items():
        start = time.perf_counter()
        detector.load()
        load_s = time.perf_counter() - start
        predictions = [detector.find(e.text) for e in pii_examples]
        stream_equal = all(stream_once(detector, p) == detector.scan(p).text for p in prompts)
        report["pii"][name] = {
            "load_s": load_s,
            **score_pii(pii_examples, predictions),
            "stream_equals_scan_on_chat_prompts": stream_equal,
        }
    # Latency, interleaved across backends so machine noise hits them alike.
    latency: dict[str, dict[str, list[tuple[float, float]]]] = {
        n: {"chat": [], "short": [], "stream": []} for n in detectors
    }
    for _ in range(repeats):
        for prompt in prompts:
            for name, detector in detectors.items():
                latency[name]["chat"].append(timed(detector.scan, prompt))
                latency[name]["stream"].append(timed(partial(stream_once, detector), prompt))
        for example in pii_examples:
            for name, detector in detectors.items():
                latency[name]["short"].append(timed(detector.scan, example.text))
    for name in detectors:
        report["pii"][name]["latency"] = {k: percentiles(v) for k, v in latency[name].items()}

    texts = [text for text, _ in injection_rows]
    labels = [label for _, label in injection_rows]
    fillers = [e.text for e in pii_examples if not e.gold]
    long_texts, long_labels = long_documents(injection_rows, fillers)
    report["long_document_mean_chars"] = statistics.mean(len(t) for t in long_texts)
    classifiers = {name: InjectionClassifier(config) for name, config in INJECTION_SETTINGS.items()}
    for name, classifier in classifiers.items():
        start = time.perf_counter()
        classifier.load()
        load_s = time.perf_counter() - start
        threshold = classifier.config.threshold
        predicted = [s >= threshold for s in classifier.score(texts)]
        long_predicted = [s >= threshold for s in classifier.score(long_texts)]
        report["injection"][name] = {
            "load_s": load_s,
            "threshold": threshold,
            **binary_scores(predicted, labels),
            "long_documents": binary_scores(long_predicted, long_labels),
            "misses": [t for t, p, y in zip(texts, predicted, labels) if y and not p],
            "false_alarms": [t for t, p, y in zip(texts, predicted, labels) if p and not y],
        }
    injection_latency: dict[str, list[tuple[float, float]]] = {n: [] for n in classifiers}
    for _ in range(repeats):
        for prompt in prompts:
            for name, classifier in classifiers.items():
                injection_latency[name].append(timed(classifier.check, prompt))
    for name in classifiers:
        report["injection"][name]["latency"] = {"chat": percentiles(injection_latency[name])}

    # Why the classifier must read the original text: the same benign PII messages,
    # before and after redaction.
    classifier = classifiers[DEFAULT_INJECTION]
    positives = [e.text for e in pii_examples if e.gold]
    redacted = [detectors["rampart"].scan(t).text for t in positives]
    original_scores = classifier.score(positives)
    redacted_scores = classifier.score(redacted)
    threshold = classifier.config.threshold
    report["placeholder_effect"] = {
        "messages": len(positives),
        "flagged_original": sum(s >= threshold for s in original_scores),
        "flagged_redacted": sum(s >= threshold for s in redacted_scores),
        "median_score_original": statistics.median(original_scores),
        "median_score_redacted": statistics.median(redacted_scores),
    }
    return report


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _ms(latency: dict, quantile: str) -> str:
    """`wall (cpu)` milliseconds at a quantile ("p50" or "p95")."""
    return f"{latency[quantile + '_ms']:.1f} ({latency['cpu_' + quantile + '_ms']:.1f})"


def markdown(report: dict) -> str:
    pii, injection = report["pii"], report["injection"]
    lines = [
        "# Guardrails: detection quality and added latency",
        "",
        "Written by `python benchmarks/guardrails_eval.py` from the hand-labelled sets in",
        "`benchmarks/data/` (invented people and numbers; cards pass Luhn, IBANs mod-97).",
        "",
        (
            f"- CPU: {report['cpu']}, {report['cores']} cores, load average "
            f"{report['load_average_at_start']:.1f} at start (a shared machine: latencies are"
        ),
        "  medians of interleaved runs, not best cases).",
        f"- Threads: {report['threads']}.",
        (
            f"- PII set: {report['pii_examples']} examples, {report['pii_positive_examples']} with "
            f"{report['pii_gold_spans']} gold spans, the rest negatives (dates, versions, codes,"
        ),
        "  order numbers, invalid cards and IBANs, place names).",
        (
            f"- Injection set: {report['injection_examples']} examples, "
            f"{report['injection_positive_examples']} attacks; the benign ones include requests"
        ),
        "  about security and innocent quoted instructions.",
        (
            f"- Latency prompts: {report['chat_prompts']} chat-length prompts (mean "
            f"{report['chat_prompt_mean_chars']:.0f} characters) made by joining consecutive"
        ),
        "  PII examples; `short` is each single example (about 70 characters).",
        "",
        DESIGN,
        "## PII (`--guard pii=...`)",
        "",
        "Span-level, a prediction counts when it overlaps a gold span of the same type",
        "(one-to-one); `exact` also needs the same boundaries. `coverage` is the share of",
        "gold characters that redaction replaces (what does not leak).",
        "",
        (
            "| backend | precision | recall | F1 | exact F1 | coverage | negatives with a false"
            " positive | load s |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, result in pii.items():
        overlap = result["overlap"]
        lines.append(
            f"| {name} | {_pct(overlap['precision'])} | {_pct(overlap['recall'])} | "
            f"{_pct(overlap['f1'])} | {_pct(result['exact']['f1'])} | "
            f"{_pct(result['gold_char_coverage'])} | "
            f"{result['negatives_with_false_positive']} | {result['load_s']:.1f} |"
        )
    lines += ["", "Per entity type (precision / recall / F1, counts tp fp fn):", ""]
    lines += ["| type | " + " | ".join(pii) + " |", "|---|" + "---|" * len(pii)]
    for entity_type in ENTITY_TYPES:
        cells = []
        for result in pii.values():
            s = result["per_type"][entity_type]
            cells.append(
                f"{_pct(s['precision'])} / {_pct(s['recall'])} / {_pct(s['f1'])} "
                f"({s['tp']} {s['fp']} {s['fn']})"
            )
        lines.append(f"| {entity_type} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Added latency per request, warm, in ms as `wall (CPU)`: `scan` of a prompt, and",
        "`stream` (the same text through `StreamRedactor` in 4-character deltas, whole",
        "output). CPU time counts every thread of the process and is the steadier figure",
        "on a busy machine; wall time includes waiting for a core.",
        "",
        "| backend | chat p50 | chat p95 | short p50 | short p95 | stream p50 | stream p95 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in pii.items():
        lat = result["latency"]
        lines.append(
            f"| {name} | {_ms(lat['chat'], 'p50')} | {_ms(lat['chat'], 'p95')} | "
            f"{_ms(lat['short'], 'p50')} | {_ms(lat['short'], 'p95')} | "
            f"{_ms(lat['stream'], 'p50')} | {_ms(lat['stream'], 'p95')} |"
        )
    lines += [""]
    for name, result in pii.items():
        lines.append(
            f"- {name}: streamed redaction equals whole-text redaction on every latency "
            f"prompt: {result['stream_equals_scan_on_chat_prompts']}."
        )
    lines += [
        "",
        "## Prompt injection (`--guard injection=...`)",
        "",
        "NanoGuard at threshold 0.5. `pad_to=512` pads every window to the model's full",
        "context as the package's own scanner does; `pad_to=64` pads to the next multiple",
        "of 64 tokens. `chunks` also scores a text over 128 tokens in chunks of whole",
        "sentences and keeps the highest score.",
        "",
        "`set`: the labelled set as written. `long documents`: each example of the set",
        (
            f"placed at a random sentence boundary inside 16 neutral sentences (mean "
            f"{report['long_document_mean_chars']:.0f} characters),"
        ),
        "as an attack hidden in a pasted document would be; `FPR` is the share of benign",
        "documents flagged. Latency as above: `wall (CPU)` ms per chat-length prompt.",
        "",
        (
            "| setting | set P / R / F1 | set tp fp fn | long documents R / FPR | chat p50 |"
            " chat p95 | load s |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in injection.items():
        lat, long = result["latency"]["chat"], result["long_documents"]
        lines.append(
            f"| {name} | {_pct(result['precision'])} / {_pct(result['recall'])} / "
            f"{_pct(result['f1'])} | {result['tp']} {result['fp']} {result['fn']} | "
            f"{_pct(long['recall'])} / {_pct(long['false_positive_rate'])} | "
            f"{_ms(lat, 'p50')} | {_ms(lat, 'p95')} | {result['load_s']:.1f} |"
        )
    result = injection[DEFAULT_INJECTION]
    lines += ["", "Missed attacks (default setting):", ""]
    lines += [f"- {json.dumps(t, ensure_ascii=False)}" for t in result["misses"]] or ["- none"]
    lines += ["", "False alarms (default setting):", ""]
    lines += [f"- {json.dumps(t, ensure_ascii=False)}" for t in result["false_alarms"]] or [
        "- none"
    ]
    effect = report["placeholder_effect"]
    lines += [
        "",
        "## Why injection is scored on the original text",
        "",
        (
            f"The {effect['messages']} benign PII messages of the PII set, scored as written and"
            " after redaction:"
        ),
        (
            f"{effect['flagged_original']} flagged as injections as written (median score "
            f"{effect['median_score_original']:.3f}), {effect['flagged_redacted']} after redaction"
            f" (median {effect['median_score_redacted']:.3f}). Placeholders such as"
        ),
        "`<EMAIL_ADDRESS>` look like markup to the classifier.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "guardrails.md")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    report = evaluate(args.repeats)
    args.out.write_text(markdown(report))
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(markdown(report))


if __name__ == "__main__":
    main()
