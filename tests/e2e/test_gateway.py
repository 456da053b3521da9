"""The gateway through real clients: keys, limits shared by two processes over a real
Redis, the response cache, fallbacks to a second tokenmill, the audit log, curl and a
schemathesis run with a key."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import ServerProcess, start_server
from tests.services.redis import redis_url  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow
ADMIN = "sk-admin-e2e"
KEYS = """
[keys.alice]
key = "sk-alice"

[keys.dave]
key = "sk-dave"
rpm = 4

[keys.bob]
key = "sk-bob"
models = ["some-other-model"]
"""


@pytest.fixture(scope="module")
def pair(tmp_path_factory, redis_url):  # noqa: F811
    """Two servers sharing keys, Redis (limits and cache), each with its audit log."""
    root = tmp_path_factory.mktemp("gateway")
    (root / "keys.toml").write_text(KEYS)
    servers = []
    try:
        for name in ("one", "two"):
            servers.append(
                start_server(
                    tmp_path_factory,
                    name,
                    "--keys",
                    str(root / "keys.toml"),
                    "--api-key",
                    ADMIN,
                    "--redis-url",
                    redis_url,
                    "--audit-log",
                    str(root / f"audit-{name}.jsonl"),
                    # The schema fuzzer sends requests without max_tokens: keep each one
                    # short, so none outlasts its 60 s client timeout on a slow CI machine.
                    "--default-max-tokens",
                    "32",
                    "--request-timeout",
                    "45",
                )
            )
        yield servers[0], servers[1], root
    finally:
        for server in servers:
            server.stop()


def client(server: ServerProcess, key: str | None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=key or "none", max_retries=0, timeout=120
    )


def ask(c: openai.OpenAI, text: str = "Name a colour.", **kw):
    return c.chat.completions.with_raw_response.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": text}],
        max_tokens=8,
        **kw,
    )


def test_keys_through_the_sdk(pair):
    one, _, _ = pair
    with pytest.raises(openai.AuthenticationError) as err:
        ask(client(one, None))
    assert err.value.code == "invalid_api_key"
    with pytest.raises(openai.PermissionDeniedError) as err:
        ask(client(one, "sk-bob"))
    assert err.value.code == "model_not_allowed"
    assert ask(client(one, "sk-alice")).parse().choices[0].message.content
    assert ask(client(one, ADMIN)).parse().choices[0].message.content
    assert httpx.get(f"{one.url}/health").status_code == 200
    assert httpx.get(f"{one.url}/metrics").status_code == 401


def test_rpm_is_shared_by_two_processes_through_redis(pair):
    one, two, _ = pair
    codes = []
    for server in (one, two, one, two, one):
        try:
            raw = ask(client(server, "sk-dave"), temperature=0.7)
            codes.append(raw.http_response.status_code)
            assert raw.headers["x-ratelimit-limit-requests"] == "4"
        except openai.RateLimitError as exc:
            codes.append(429)
            assert exc.code == "rate_limit_exceeded"
            assert int(exc.response.headers["retry-after"]) >= 1
    assert codes == [200, 200, 200, 200, 429]


def test_the_cache_answers_again_from_either_process(pair):
    one, two, _ = pair
    first = ask(client(one, "sk-alice"), "What is 2+2?", temperature=0)
    again = ask(client(two, "sk-alice"), "What is 2+2?", temperature=0)
    assert first.headers["x-tokenmill-cache"] == "miss"
    assert again.headers["x-tokenmill-cache"] == "hit"
    assert first.parse().choices[0].message.content == again.parse().choices[0].message.content
    stream = client(one, "sk-alice").chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "What is 2+2?"}],
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == first.parse().choices[0].message.content
    other_key = ask(client(one, ADMIN), "What is 2+2?", temperature=0)
    assert other_key.headers["x-tokenmill-cache"] == "miss"


def test_curl_with_a_key(pair):
    one, _, _ = pair
    body = json.dumps({"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4})
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-H",
            "Authorization: Bearer sk-alice",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            f"{one.url}/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout)["object"] == "chat.completion"
    denied = subprocess.run(
        ["curl", "-sS", f"{one.url}/v1/models"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(denied.stdout)["error"]["code"] == "invalid_api_key"


def test_the_audit_log_names_keys_but_never_holds_them(pair):
    one, _, root = pair
    ask(client(one, "sk-alice"), "audit me")
    lines = [json.loads(x) for x in (root / "audit-one.jsonl").read_text().splitlines()]
    assert any(x["key"] == "alice" and x["status"] == "ok" for x in lines)
    assert any(x["key"] == "bob" and x["status"] == "model_not_allowed" for x in lines)
    raw = (root / "audit-one.jsonl").read_text()
    assert "sk-alice" not in raw and "audit me" not in raw


def test_schemathesis_with_a_key_finds_no_server_error(pair, tmp_path):
    one, _, _ = pair
    schemathesis = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{one.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "-H",
            f"Authorization: Bearer {ADMIN}",
            "--max-examples",
            "15",
            "--max-time",
            "40",
            "--seed",
            "20251130",
            "--request-timeout",
            "60",
            "--generation-database",
            "none",
            "--no-color",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout


@pytest.fixture(scope="module")
def fallback_pair(tmp_path_factory):
    target = start_server(tmp_path_factory, "target")
    try:
        primary = start_server(
            tmp_path_factory,
            "primary",
            "--max-num-seqs",
            "1",
            "--max-queue",
            "0",
            "--fallback",
            f"{target.url}/v1",
        )
        try:
            yield primary, target
        finally:
            primary.stop()
    finally:
        target.stop()


def test_overload_falls_back_to_a_second_tokenmill(fallback_pair):
    primary, target = fallback_pair
    c = client(primary, None)

    def one_request(i: int):
        raw = c.completions.with_raw_response.create(
            model="smollm2-135m-instruct",
            prompt=f"Count to {i}:",
            max_tokens=24,
            extra_body={"ignore_eos": True},
        )
        return raw.headers["x-tokenmill-served-by"], raw.parse().choices[0].finish_reason

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one_request, range(4)))
    served_by = {who for who, _ in results}
    assert all(reason == "length" for _, reason in results)
    assert served_by == {"local", f"{target.url}/v1"}, results


@pytest.fixture(scope="module")
def semantic(tmp_path_factory):
    server = start_server(tmp_path_factory, "semantic", "--response-cache", "semantic")
    yield server
    server.stop()


def test_semantic_cache_from_the_command_line(semantic):
    """`tokenmill serve --response-cache semantic` loads the sentence encoder and answers
    a reworded prompt from the cache; an unrelated prompt misses."""
    c = client(semantic, None)
    first = ask(c, "What is the capital city of France?", temperature=0)
    reworded = ask(c, "what is the capital city of france", temperature=0)
    other = ask(c, "Write a haiku about the sea.", temperature=0)
    assert first.headers["x-tokenmill-cache"] == "miss"
    assert reworded.headers["x-tokenmill-cache"] == "hit"
    assert reworded.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert other.headers["x-tokenmill-cache"] == "miss"
