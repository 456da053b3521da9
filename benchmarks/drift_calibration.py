"""Drift detection, calibrated and proven on real prompts; writes docs/drift.md.

Reads the records that benchmarks/drift_records.py wrote (prompt sets answered by the
default model), embeds every prompt once with tokenmill's all-MiniLM-L6-v2, then
repeats, with fresh random draws each trial:

1. False alarms. Reference: 200 English records; window: W other English records
   (disjoint, so both are samples of one distribution). Rate of "drift" verdicts over
   the trials, for W = 40 (the smallest window allowed) and 100, with a 95%
   Clopper-Pearson upper bound. Beside it, a fixed PSI threshold on the same windows.
2. Detection at a fixed window. The window holds a share (100%, 50%, ...) of shifted
   traffic (French, code, long pasted documents), the rest English: rate of "drift".
3. Detection delay on a stream. The window starts full of English traffic, then the
   stream switches to shifted traffic; checking every `--check-every` requests, how many
   shifted requests pass before the first "drift".
4. False alarms on a stream. 200 English requests after the reference, checked every
   `--check-every` requests: how often at least one check of the run says "drift"
   (checks of overlapping windows are not independent trials).

    .venv/bin/python benchmarks/drift_calibration.py [--null-trials 300] [--trials 100]
        [--stream-trials 20] [--shares 1.0,0.5] [--check-every 5]
        [--out docs/drift.md]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import drift_prompts
import numpy as np
from scipy.stats import beta

from tokenmill.config import DriftConfig
from tokenmill.model.encoders import SentenceEncoder
from tokenmill.observability.drift import DriftMonitor, Profile, observe, read_records
from tokenmill.observability.drift.two_sample import psi

REFERENCE = 200
SHIFTS = ("french", "code", "long")
ROOT = Path(__file__).resolve().parents[1]


def load_observations(encoder: SentenceEncoder, directory: Path) -> tuple[dict, dict]:
    """Every prompt of every set as an Observation, embedded in batches. A prompt the
    records generator did not reach (its run cut short on a busy machine) gets the
    answer fields of a random answered English prompt: each signal is tested on its own,
    so pairing does not matter for the false-alarm rates, and for shifted sets it can
    only understate detection (their real answers would shift too). Returns the
    observations and, per set, how many prompts have the model's own answer."""
    answered: dict[str, dict] = {}
    for name in drift_prompts.SETS:
        path = directory / f"{name}.jsonl"
        answered[name] = {r.prompt: r for r in read_records(path)} if path.exists() else {}
    pool = list(answered["english"].values())
    if not pool:
        raise SystemExit(f"No English records in {directory}: run benchmarks/drift_records.py")
    rng = np.random.default_rng(0)
    out, own = {}, {}
    for name in drift_prompts.SETS:
        records = [
            answered[name].get(p) or replace(pool[int(rng.integers(len(pool)))], prompt=p)
            for p in drift_prompts.load(name)
        ]
        own[name] = sum(p.prompt in answered[name] for p in records)
        vectors = encoder.embed([r.prompt for r in records], truncate=True).vectors
        out[name] = [observe(r, v) for r, v in zip(records, vectors, strict=True)]
    return out, own


def upper95(k: int, n: int) -> float:
    """Clopper-Pearson one-sided 95% upper bound of a rate seen k times in n."""
    return 1.0 if k == n else float(beta.ppf(0.95, k + 1, n - k))


class Trials:
    def __init__(self, obs: dict[str, list], seed: int, permutations: int) -> None:
        self.obs = obs
        self.rng = np.random.default_rng(seed)
        self.permutations = permutations
        self.check_seconds: list[float] = []

    def _draw(self, pool: list, k: int) -> list:
        return [pool[i] for i in self.rng.choice(len(pool), k, replace=False)]

    def _monitor(self, reference: list, window: int) -> DriftMonitor:
        config = DriftConfig(
            reference_size=REFERENCE,
            window_size=window,
            num_permutations=self.permutations,
            seed=int(self.rng.integers(2**31)),
        )
        return DriftMonitor(config, Profile.from_observations(reference, "all-minilm-l6-v2"))

    def _check(self, monitor: DriftMonitor):
        start = time.perf_counter()
        report = monitor.check()
        self.check_seconds.append(time.perf_counter() - start)
        return report

    def fixed_window(self, window: int, shift: str | None, share: float) -> dict:
        """One trial: reference and a window with `share` of `shift` traffic."""
        english = self.obs["english"]
        order = self.rng.permutation(len(english))
        reference = [english[i] for i in order[:REFERENCE]]
        n_shift = round(window * share) if shift else 0
        rest = [english[i] for i in order[REFERENCE : REFERENCE + window - n_shift]]
        live = rest + (self._draw(self.obs[shift], n_shift) if n_shift else [])
        monitor = self._monitor(reference, window)
        for o in self.rng.permutation(len(live)):
            monitor.observe(live[o])
        report = self._check(monitor)
        ref_len = np.array([o.prompt_chars for o in reference], dtype=float)
        win_len = np.array([o.prompt_chars for o in live], dtype=float)
        ref_out = np.array([o.output_tokens for o in reference], dtype=float)
        win_out = np.array([o.output_tokens for o in live], dtype=float)
        return {
            "drift": report.status == "drift",
            "signals": {s.name: s.status == "drift" for s in report.signals},
            "p": {s.name: s.p_value for s in report.signals},
            "psi_prompt_length": psi(ref_len, win_len),
            "psi_output_length": psi(ref_out, win_out),
        }

    def stream(self, window: int, shift: str | None, every: int, length: int) -> int | None:
        """Requests after the switch (or after the reference, for shift None) until
        the first "drift" check; None if none within `length`."""
        english = self.obs["english"]
        order = self.rng.permutation(len(english))
        reference = [english[i] for i in order[:REFERENCE]]
        after = [english[i] for i in order[REFERENCE:]]
        monitor = self._monitor(reference, window)
        if shift is None:
            stream = after[:length]
        else:
            for o in after[:window]:
                monitor.observe(o)
            stream = self._draw(self.obs[shift], min(length, len(self.obs[shift])))
        for i, o in enumerate(stream, 1):
            monitor.observe(o)
            full = shift is not None or i >= window
            if full and i % every == 0 and self._check(monitor).status == "drift":
                return i
        return None


def rate(flags: list[bool]) -> dict:
    k, n = sum(flags), len(flags)
    return {"k": k, "n": n, "rate": k / n, "upper95": upper95(k, n)}


def run(args: argparse.Namespace) -> dict:
    import torch  # after tokenmill, which sets OMP_WAIT_POLICY before torch loads

    torch.set_num_threads(args.threads or torch.get_num_threads())
    encoder = SentenceEncoder.load()
    start = time.perf_counter()
    obs, own = load_observations(encoder, args.records)
    embed_s = time.perf_counter() - start
    trials = Trials(obs, args.seed, args.permutations)
    results: dict = {
        "settings": {
            "null_trials": args.null_trials,
            "trials": args.trials,
            "stream_trials": args.stream_trials,
            "permutations": args.permutations,
            "alpha": 0.05,
            "reference": REFERENCE,
            "check_every": args.check_every,
            "shares": args.shares,
            "seed": args.seed,
            "records": {k: len(v) for k, v in obs.items()},
            "own_answers": own,
            "embedding_seconds": embed_s,
            "torch_threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "load_avg": os.getloadavg()[0],
        },
        "null": {},
        "detect": {},
        "delay": {},
        "stream_null": {},
    }
    for window in (40, 100):
        runs = [trials.fixed_window(window, None, 0.0) for _ in range(args.null_trials)]
        names = list(runs[0]["signals"])
        results["null"][window] = {
            "overall": rate([r["drift"] for r in runs]),
            "per_signal": {n: rate([r["signals"][n] for r in runs]) for n in names},
            "psi": {
                f"{kind}>{t}": rate([r[f"psi_{kind}"] > t for r in runs])
                for kind in ("prompt_length", "output_length")
                for t in (0.1, 0.2, 0.25)
            },
            "psi_median": {
                kind: float(np.median([r[f"psi_{kind}"] for r in runs]))
                for kind in ("prompt_length", "output_length")
            },
        }
        print(f"null W={window}: {results['null'][window]['overall']}", flush=True)
        for shift in SHIFTS:
            for share in args.shares:
                runs = [trials.fixed_window(window, shift, share) for _ in range(args.trials)]
                key = f"{shift}@{window}@{share}"
                results["detect"][key] = {
                    "overall": rate([r["drift"] for r in runs]),
                    "per_signal": {n: rate([r["signals"][n] for r in runs]) for n in names},
                }
                print(f"detect {key}: {results['detect'][key]['overall']}", flush=True)
            delays = [
                trials.stream(window, shift, args.check_every, window)
                for _ in range(args.stream_trials)
            ]
            results["delay"][f"{shift}@{window}"] = delays
            print(f"delay {shift}@{window}: {delays}", flush=True)
        firsts = [
            trials.stream(window, None, args.check_every, 200) for _ in range(args.stream_trials)
        ]
        results["stream_null"][window] = firsts
        print(f"stream null W={window}: {firsts}", flush=True)
    results["settings"]["check_ms_median"] = 1000 * float(np.median(trials.check_seconds))
    results["settings"]["check_ms_p90"] = 1000 * float(np.percentile(trials.check_seconds, 90))
    return results


def main() -> None:
    # Thousands of checks, many meant to fire: the monitor's warnings are not news here.
    logging.getLogger("tokenmill.observability.drift").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--null-trials", type=int, default=300)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--stream-trials", type=int, default=20)
    parser.add_argument("--shares", default="1.0,0.5", help="shifted shares of the window")
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--check-every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--records", type=Path, default=drift_prompts.DATA / "records")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "drift_calibration.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "drift.md")
    args = parser.parse_args()
    args.shares = [float(x) for x in args.shares.split(",")]
    results = run(args)
    args.json.write_text(json.dumps(results, indent=1))
    from drift_report import render  # the markdown page, kept apart from the experiment

    args.out.write_text(render(results))
    print(f"wrote {args.out} and {args.json}")


if __name__ == "__main__":
    main()
