"""Quality of the task endpoints on tokenmill's labelled sets (benchmarks/data/).

Starts `tokenmill serve --models` with SmolLM2 (float32, zero-shot /v1/classify) and
spaCy's English pipeline (/v1/ner), sends every labelled sentence through the HTTP
endpoints, and prints and saves:

- sentiment (benchmarks/data/sentiment.jsonl, 200 sentences, positive/negative):
  accuracy and macro-F1 of /v1/classify with task "sentiment", and of the VADER
  lexicon baseline (compound >= 0 -> positive, as VADER's authors suggest for a
  two-way split);
- NER (benchmarks/data/ner.jsonl, 101 sentences, PERSON/ORG/LOC/DATE gold spans):
  span-level precision, recall and F1 (a span counts when start, end and label all
  match; spaCy's GPE, LOC and FAC count as LOC; its other labels are not scored).

    python benchmarks/task_quality.py --out docs/task_quality.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

DATA = Path(__file__).parent / "data"
MODELS = """
[[models]]
name = "smollm2"
version = "1"
dtype = "float32"

[[models]]
name = "spacy-ner"
version = "1"
task = "ner"
"""
LOC = {"GPE": "LOC", "LOC": "LOC", "FAC": "LOC"}
SCORED = {"PERSON", "ORG", "LOC", "DATE"}


def macro_f1(gold: list[str], pred: list[str]) -> float:
    scores = []
    for label in sorted(set(gold)):
        tp = sum(g == p == label for g, p in zip(gold, pred))
        fp = sum(p == label != g for g, p in zip(gold, pred))
        fn = sum(g == label != p for g, p in zip(gold, pred))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def sentiment_figures(gold: list[str], pred: list[str]) -> dict:
    accuracy = sum(g == p for g, p in zip(gold, pred)) / len(gold)
    return {"accuracy": round(accuracy, 4), "macro_f1": round(macro_f1(gold, pred), 4)}


def vader(texts: list[str]) -> list[str]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return [
        "positive" if analyzer.polarity_scores(t)["compound"] >= 0 else "negative" for t in texts
    ]


def span_f1(gold: list[set], pred: list[set]) -> dict:
    tp = sum(len(g & p) for g, p in zip(gold, pred))
    n_pred, n_gold = sum(map(len, pred)), sum(map(len, gold))
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "gold_spans": n_gold,
        "predicted_spans": n_pred,
    }


def start_server(models: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tokenmill.cli.main",
            "serve",
            "--port",
            str(port),
            "--models",
            str(models),
            "--max-model-len",
            "2048",
            "--kv-cache-memory-gib",
            "0.5",
            "--access-log",
            "false",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", type=Path, help="write the figures here (JSON)")
    args = parser.parse_args()
    sentiment = [json.loads(line) for line in (DATA / "sentiment.jsonl").open()]
    ner = [json.loads(line) for line in (DATA / "ner.jsonl").open()]
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models.toml"
        models.write_text(MODELS)
        proc = start_server(models, args.port)
        http = httpx.Client(base_url=f"http://127.0.0.1:{args.port}", timeout=600)
        try:
            deadline = time.monotonic() + 1800
            while True:
                assert proc.poll() is None, "the server exited"
                assert time.monotonic() < deadline, "the server never became ready"
                try:
                    if http.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(1)
            texts = [r["text"] for r in sentiment]
            pred = []
            started = time.perf_counter()
            for i in range(0, len(texts), 20):
                r = http.post(
                    "/v1/classify",
                    json={"model": "smollm2", "input": texts[i : i + 20], "task": "sentiment"},
                )
                r.raise_for_status()
                pred += [row["label"] for row in r.json()["data"]]
            classify_s = time.perf_counter() - started
            r = http.post("/v1/ner", json={"model": "spacy-ner", "input": [x["text"] for x in ner]})
            r.raise_for_status()
            found = [
                {(e["start"], e["end"], LOC.get(e["label"], e["label"])) for e in row["entities"]}
                for row in r.json()["data"]
            ]
        finally:
            proc.terminate()
            proc.wait(60)
    gold = [r["label"] for r in sentiment]
    figures = {
        "sentiment": {
            "sentences": len(gold),
            "tokenmill_zero_shot_smollm2": sentiment_figures(gold, pred),
            "vader_baseline": sentiment_figures(gold, vader(texts)),
            "classify_seconds": round(classify_s, 1),
        },
        "ner": {
            "sentences": len(ner),
            "spacy_en_core_web_sm": span_f1(
                [{(e["start"], e["end"], e["label"]) for e in x["entities"]} for x in ner],
                [{s for s in spans if s[2] in SCORED} for spans in found],
            ),
        },
    }
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
