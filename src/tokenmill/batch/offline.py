"""`tokenmill batch INPUT -o OUTPUT`: a Batch API file run in this process, like vLLM's run_batch.

The same path as the server's batches: each line through the gateway pipeline (the
configured policies included) over an in-process engine, its result in OpenAI's output
line shape. Lines may mix /v1/chat/completions and /v1/completions. The output holds one
line per input line, in input order, successes and errors alike.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenmill.batch.executor import LineInterrupted, execute_line
from tokenmill.batch.input_file import read_input_file
from tokenmill.batch.lines import RequestLine
from tokenmill.config import AppConfig
from tokenmill.config.batch import OfflineBatchConfig
from tokenmill.errors import ConfigError
from tokenmill.files import write_text_atomically
from tokenmill.gateway.call import Caller

MAX_BACKOFF_S = 5.0


@dataclass(frozen=True)
class OfflineSummary:
    total: int
    succeeded: int
    failed: int


def run_offline(
    config: OfflineBatchConfig,
    input_path: Path,
    output_path: Path,
    concurrency: int | None = None,
    progress: bool = True,
) -> OfflineSummary:
    """Runs every line of `input_path` and writes `output_path`. Raises ConfigError for an
    input that cannot be read or holds no request."""
    try:
        parsed = read_input_file(input_path, endpoint=None)
    except OSError as exc:
        raise ConfigError(f"cannot read {input_path}: {exc.strerror}") from None
    if parsed.error is not None:
        raise ConfigError(f"{input_path}: {parsed.error['message']}")
    if concurrency is None:
        concurrency = 2 * config.engine.scheduler.max_num_seqs
    if concurrency < 1:
        raise ConfigError("--concurrency must be at least 1.")
    records = asyncio.run(_run(config, parsed.lines, concurrency, progress))
    try:
        write_text_atomically(output_path, "".join(json.dumps(r) + "\n" for r in records))
    except OSError as exc:
        raise ConfigError(f"cannot write {output_path}: {exc.strerror}") from None
    ok = sum(1 for r in records if r["response"] and r["response"]["status_code"] == 200)
    return OfflineSummary(len(records), ok, len(records) - ok)


async def _run(
    config: OfflineBatchConfig, lines: list, concurrency: int, progress: bool
) -> list[dict[str, Any]]:
    from tqdm import tqdm

    from tokenmill.engine.async_engine import AsyncEngine
    from tokenmill.gateway.assemble import build_pipeline, redis_client

    engine = await asyncio.to_thread(AsyncEngine.from_config, config.engine)
    await engine.start()
    app_config = AppConfig(engine=config.engine, gateway=config.gateway)
    pipeline = await asyncio.to_thread(
        build_pipeline, engine, app_config, redis_client(config.gateway.redis_url)
    )
    records: list[dict[str, Any] | None] = [error for _, _, _, error in lines]
    bar = tqdm(
        total=len(lines),
        initial=sum(r is not None for r in records),
        desc="batch",
        unit="req",
        file=sys.stderr,
        disable=not progress,
    )
    slots = asyncio.Semaphore(concurrency)
    caller = Caller()

    async def one(index: int, request: RequestLine) -> None:
        async with slots:
            attempt = 0
            while True:
                try:
                    result = await execute_line(pipeline, request, caller)
                    break
                except LineInterrupted as exc:
                    attempt += 1
                    await asyncio.sleep(min(MAX_BACKOFF_S, exc.retry_after_s or 0.1 * 2**attempt))
            records[index] = result.record
            bar.update(1)

    try:
        await asyncio.gather(
            *(
                one(i, RequestLine.from_json(request))
                for i, (_, _, request, error) in enumerate(lines)
                if error is None
            )
        )
    finally:
        bar.close()
        await engine.shutdown(grace_s=0)
    return records  # type: ignore[return-value] - every slot is filled by now
