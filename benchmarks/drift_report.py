"""Renders docs/drift.md from the calibration results (see drift_calibration.py)."""

from __future__ import annotations

import numpy as np

SHIFT_NAMES = {
    "french": "French prompts",
    "code": "code questions",
    "long": "long pasted documents",
}


def _pct(r: dict) -> str:
    return f"{100 * r['rate']:.1f}% ({r['k']}/{r['n']})"


def _delay_cell(delays: list, window: int) -> str:
    hits = [d for d in delays if d is not None]
    if not hits:
        return f"not within {window}"
    median = int(np.median(hits))
    worst = max(hits)
    return f"{len(hits)}/{len(delays)} detected; median {median}, max {worst}"


def _borrowed_note(s: dict) -> list[str]:
    own, total = s["own_answers"], s["records"]
    if all(own[k] == total[k] for k in total):
        return []
    counts = ", ".join(f"{k} {own[k]} of {total[k]}" for k in total)
    return [
        (
            f"Prompts answered by the model: {counts}. The records run was cut short on "
            "the shared machine; every other prompt carries the answer fields of a random "
            "answered English prompt. Each signal is tested on its own, so this pairing "
            "leaves the false-alarm rates valid; for shifted traffic only the prompts then "
            "shift, so the detection rates below understate what real shifted traffic, "
            "whose answers also change, would show."
        ),
        "",
    ]


def render(res: dict) -> str:
    s = res["settings"]
    lines = [
        "# Drift detection: calibration and proof",
        "",
        (
            "Written by `benchmarks/drift_calibration.py` "
            "(`.venv/bin/python benchmarks/drift_calibration.py --null-trials "
            f"{s['null_trials']} --trials {s['trials']} --stream-trials {s['stream_trials']} "
            f"--shares {','.join(str(x) for x in s['shares'])} --check-every "
            f"{s['check_every']} --threads {s['torch_threads']}`), "
            "from the records that "
            "`benchmarks/drift_records.py` wrote. Figures below are measured, not set."
        ),
        "",
        "## Method",
        "",
        (
            "Each check compares the live window with the reference on seven signals and tests "
            f"each at alpha / m = {s['alpha']} / 7 (Bonferroni over the m signals tested), so a "
            f'check of same-distribution traffic says "drift" with probability at most '
            f"{s['alpha']}, however the signals correlate:"
        ),
        "",
        "| signal | kind | test |",
        "| --- | --- | --- |",
        (
            "| prompt_embedding | input | MMD, Gaussian kernel (median-distance width), "
            f"{s['permutations']} permutations |"
        ),
        "| prompt_length | input | two-sample Kolmogorov-Smirnov (characters) |",
        "| prompt_script | input | permutation chi-square on script / language |",
        "| output_length | output | two-sample Kolmogorov-Smirnov (tokens) |",
        "| finish_reason | output | permutation chi-square |",
        "| answer_kind | output | permutation chi-square on answered / empty / refused |",
        "| mean_logprob | output | two-sample Kolmogorov-Smirnov |",
        "",
        f"Reference: {s['reference']} records. Trials draw fresh random samples (seed "
        f"{s['seed']}); records per set: "
        + ", ".join(f"{k} {v}" for k, v in s["records"].items())
        + f". One check took {s['check_ms_median']:.0f} ms median, {s['check_ms_p90']:.0f} ms "
        f"p90 (torch threads {s['torch_threads']}, load average {s['load_avg']:.1f} on a "
        "shared 2-core machine).",
        "",
        *_borrowed_note(s),
        "## 1. False alarms on in-distribution traffic",
        "",
        (
            "Reference and window are disjoint random samples of the English chat records "
            '(prompts, and the model\'s answers to them). A "drift" verdict here is a false '
            "alarm. The bound is the one-sided 95% Clopper-Pearson upper limit."
        ),
        "",
        "| window | false alarms | 95% upper bound |",
        "| --- | --- | --- |",
    ]
    for w, r in res["null"].items():
        o = r["overall"]
        lines.append(f"| {w} | {_pct(o)} | {100 * o['upper95']:.1f}% |")
    lines += [
        "",
        "Per signal (each tested at alpha / 7):",
        "",
        "| window | " + " | ".join(next(iter(res["null"].values()))["per_signal"]) + " |",
        "| --- |" + " --- |" * 7,
    ]
    for w, r in res["null"].items():
        cells = [f"{100 * v['rate']:.1f}%" for v in r["per_signal"].values()]
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "### A fixed PSI threshold on the same windows",
        "",
        (
            "The population stability index over ten quantile bins of the reference, with the "
            "usual fixed thresholds, on the same identical-distribution windows:"
        ),
        "",
        "| window | feature | median PSI | PSI > 0.1 | PSI > 0.2 | PSI > 0.25 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for w, r in res["null"].items():
        for kind in ("prompt_length", "output_length"):
            cells = [_pct(r["psi"][f"{kind}>{t}"]) for t in (0.1, 0.2, 0.25)]
            lines.append(
                f"| {w} | {kind} | {r['psi_median'][kind]:.3f} | " + " | ".join(cells) + " |"
            )
    lines += [
        "",
        (
            "With ten bins a window of 40 holds four requests per bin on average, so sampling "
            "noise alone gives a PSI near (bins - 1) x (1/40 + 1/200) = 0.27: a fixed "
            "threshold fires on identical traffic most of the time at W = 40. The p-value "
            "tests above adapt to the window size instead."
        ),
        "",
        "## 2. Detection at a fixed window",
        "",
        (
            "The window holds the stated share of shifted traffic, the rest English. Rate of "
            '"drift" verdicts:'
        ),
        "",
        "| shifted traffic | window | "
        + " | ".join(f"{100 * x:.0f}% shifted" for x in s["shares"])
        + " |",
        "| --- | --- |" + " --- |" * len(s["shares"]),
    ]
    windows = list(res["null"])
    for shift, label in SHIFT_NAMES.items():
        for w in windows:
            cells = [
                _pct(res["detect"][f"{shift}@{w}@{share}"]["overall"]) for share in s["shares"]
            ]
            lines.append(f"| {label} | {w} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Which signals fired (100% shifted, share of trials):",
        "",
        "| shifted traffic | window | "
        + " | ".join(next(iter(res["detect"].values()))["per_signal"])
        + " |",
        "| --- | --- |" + " --- |" * 7,
    ]
    for shift, label in SHIFT_NAMES.items():
        for w in windows:
            per = res["detect"][f"{shift}@{w}@1.0"]["per_signal"]
            lines.append(
                f"| {label} | {w} | "
                + " | ".join(f"{100 * v['rate']:.0f}%" for v in per.values())
                + " |"
            )
    lines += [
        "",
        "## 3. Detection delay on a stream",
        "",
        (
            f"The window starts full of English traffic; then every request is shifted. "
            f"Checking every {s['check_every']} requests, the number of shifted requests "
            'until the first "drift" verdict (over '
            f"{s['stream_trials']} streams, at most one window long):"
        ),
        "",
        "| shifted traffic | window 40 | window 100 |",
        "| --- | --- | --- |",
    ]
    for shift, label in SHIFT_NAMES.items():
        cells = [_delay_cell(res["delay"][f"{shift}@{w}"], int(w)) for w in windows]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## 4. False alarms over a stream of checks",
        "",
        (
            "Each check holds its false-alarm rate at 5%, but checks of overlapping windows are "
            f"not independent. Over 200 English requests after the reference, checked every "
            f"{s['check_every']} requests once the window is full, the share of streams with "
            "at least one false alarm:"
        ),
        "",
        "| window | streams with a false alarm | first alarm after (median) |",
        "| --- | --- | --- |",
    ]
    for w, firsts in res["stream_null"].items():
        hits = [f for f in firsts if f is not None]
        median = f"{int(np.median(hits))} requests" if hits else "-"
        lines.append(f"| {w} | {len(hits)}/{len(firsts)} | {median} |")
    lines += [
        "",
        (
            'So a server should treat one "drift" verdict as a signal to look, alert on '
            "drift that persists over several checks, or check once per window."
        ),
        "",
        "## Data",
        "",
        (
            "All prompt sets were written for tokenmill's benchmarks and are released with it "
            "under the project's licence; none is copied from a third-party corpus."
        ),
        "",
        (
            "- `benchmarks/data/drift/english_chat.txt`: varied English chat prompts (advice, "
            "how-to, explanations, writing, cooking, travel, health, money, history, science), "
            "mostly one sentence, about forty of several sentences with context."
        ),
        (
            "- `french_chat.txt`: French chat prompts, most on the same topics as English "
            "ones, so the shift is the language more than the subject."
        ),
        (
            "- `code.txt`: programming questions, most with a snippet (Python, JavaScript, "
            "SQL, shell, Go, Rust, Java, C), separated by `%%` lines."
        ),
        (
            "- `long_passages.txt`: memos, notices, reports, stories and reviews; the 100 long "
            "prompts put a task before one or two of them (`benchmarks/drift_prompts.py`)."
        ),
        (
            "- `records/*.jsonl`: each prompt answered by the default model (SmolLM2-135M-"
            "Instruct, Q4_1 weights dequantized to float32, temperature 0.7, top-p 0.9, at most "
            "64 tokens, seed = index) through tokenmill's offline API, as drift records "
            "(`benchmarks/drift_records.py --pure-pytorch --quantization none`: the shared "
            "native-kernel build was locked by a dead build on this machine)."
        ),
        "",
    ]
    return "\n".join(lines)
