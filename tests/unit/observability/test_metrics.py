"""/metrics: vLLM's names with the tokenmill: prefix, and numbers that match the traffic."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from tests.unit.gateway.conftest import chat, gateway_client
from tests.unit.server.fake_engine import FakeEngine
from tests.unit.server.test_generation_api import sse_events

# What Prometheus 3 sends when it scrapes (its default scrape_protocols, in order).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
SAMPLED = {"temperature": 0.8}  # not cacheable: every request reaches the engine


def scrape(client, accept: str = PROMETHEUS_ACCEPT) -> dict[tuple[str, tuple], float]:
    """Sample name and sorted labels -> value, as Prometheus would store them."""
    response = client.get("/metrics", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples, name: str, **labels: str) -> float:
    """Sum over every series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def test_counters_after_known_requests_equal_the_responses_usage():
    engine = FakeEngine(script="Hello world")
    with gateway_client(engine) as c:
        usages, reasons = [], []
        for max_tokens in (3, 5, 20):
            r = c.post(
                "/v1/chat/completions", json=chat("hi there", max_tokens=max_tokens, **SAMPLED)
            )
            assert r.status_code == 200
            usages.append(r.json()["usage"])
            reasons.append(r.json()["choices"][0]["finish_reason"])
        streamed = c.post(
            "/v1/completions",
            json={
                "prompt": "abc",
                "max_tokens": 4,
                "stream": True,
                "stream_options": {"include_usage": True},
                **SAMPLED,
            },
        )
        events = sse_events(streamed.text)
        usages.append(events[-2]["usage"])
        reasons.append("length")
        samples = scrape(c)
    m = {"model_name": "fake-model"}
    assert value(samples, "tokenmill:prompt_tokens_total", **m) == sum(
        u["prompt_tokens"] for u in usages
    )
    assert value(samples, "tokenmill:generation_tokens_total", **m) == sum(
        u["completion_tokens"] for u in usages
    )
    assert reasons == ["length", "length", "stop", "length"]
    assert value(samples, "tokenmill:request_success_total", finished_reason="length", **m) == 3
    assert value(samples, "tokenmill:request_success_total", finished_reason="stop", **m) == 1
    for hist in (
        "tokenmill:e2e_request_latency_seconds",
        "tokenmill:time_to_first_token_seconds",
        "tokenmill:request_prompt_tokens",
        "tokenmill:request_generation_tokens",
    ):
        assert value(samples, hist + "_count", **m) == 4, hist
    assert value(samples, "tokenmill:request_generation_tokens_sum", **m) == sum(
        u["completion_tokens"] for u in usages
    )
    # Every request generated more than one token, so each has a mean inter-token gap.
    assert value(samples, "tokenmill:inter_token_latency_seconds_count", **m) == 4
    chat_ok = {"route": "/v1/chat/completions", "method": "POST", "status": "200"}
    assert value(samples, "tokenmill:http_requests_total", **chat_ok) == 3
    assert total(samples, "tokenmill:http_requests_total", route="/v1/completions") == 1


def test_engine_gauges_and_every_series_carry_the_model_name():
    with gateway_client(FakeEngine()) as c:
        samples = scrape(c)
    for name in (
        "tokenmill:num_requests_running",
        "tokenmill:num_requests_waiting",
        "tokenmill:kv_cache_usage_perc",
        "tokenmill:prefix_cache_queries_total",
        "tokenmill:prefix_cache_hits_total",
        "tokenmill:num_preemptions_total",
    ):
        assert (name, (("model_name", "fake-model"),)) in samples, name
    model_free = {"tokenmill:http_requests_total"}
    for name, labels in samples:
        if name.split("_created")[0] in model_free or name.startswith("tokenmill:http_requests"):
            continue
        assert dict(labels).get("model_name") == "fake-model", (name, labels)


def test_names_are_the_same_whatever_the_scraper_accepts():
    with gateway_client(FakeEngine()) as c:
        c.post("/v1/chat/completions", json=chat(**SAMPLED))
        names = [
            {n for n, _ in scrape(c, accept)}
            for accept in (PROMETHEUS_ACCEPT, "text/plain", "application/openmetrics-text")
        ]
    assert names[0] == names[1] == names[2]
    assert "tokenmill:generation_tokens_total" in names[0]
    assert not any(n.startswith("tokenmill_") for n in names[0])


def test_cache_hits_count_as_lookups_and_not_as_model_tokens():
    with gateway_client(FakeEngine()) as c:
        first = c.post("/v1/chat/completions", json=chat(temperature=0))
        second = c.post("/v1/chat/completions", json=chat(temperature=0))
        assert second.headers["x-tokenmill-cache"] == "hit"
        samples = scrape(c)
    m = {"model_name": "fake-model"}
    lookups = "tokenmill:response_cache_lookups_total"
    assert value(samples, lookups, result="miss", kind="exact", **m) == 1
    assert value(samples, lookups, result="hit", kind="exact", **m) == 1
    usage = first.json()["usage"]
    assert value(samples, "tokenmill:generation_tokens_total", **m) == usage["completion_tokens"]


def test_rate_limited_calls_count_by_key_name_and_failures_by_code(tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys.small]\nkey = "ks"\nrpm = 1\n')
    auth = {"Authorization": "Bearer ks"}
    with gateway_client(FakeEngine(), keys=str(keys)) as c:
        assert c.post("/v1/chat/completions", json=chat(**SAMPLED), headers=auth).status_code == 200
        for _ in range(2):
            limited = c.post("/v1/chat/completions", json=chat(**SAMPLED), headers=auth)
            assert limited.status_code == 429
        assert c.get("/metrics").status_code == 401  # behind the keys like the API
        samples = scrape_with(c, auth)
    m = {"model_name": "fake-model"}
    assert value(samples, "tokenmill:rate_limited_requests_total", key_name="small", **m) == 2
    assert value(samples, "tokenmill:request_failure_total", code="rate_limit_exceeded", **m) == 2
    chat_429 = {"route": "/v1/chat/completions", "method": "POST", "status": "429"}
    assert value(samples, "tokenmill:http_requests_total", **chat_429) == 2
    assert (
        value(
            samples, "tokenmill:http_requests_total", route="unmatched", method="GET", status="401"
        )
        == 1
    )


def scrape_with(client, headers):
    response = client.get("/metrics", headers={"Accept": PROMETHEUS_ACCEPT, **headers})
    assert response.status_code == 200, response.text
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_off_means_no_route():
    with gateway_client(FakeEngine(), metrics=False) as c:
        assert c.get("/metrics").status_code == 404
        assert json.loads(c.get("/metrics").text)["error"]


def test_shadow_comparisons_are_exported_per_shadow_version():
    from tokenmill.gateway.registry import ShadowStats
    from tokenmill.observability.metrics import Metrics

    stats = ShadowStats()
    metrics = Metrics()
    metrics.watch_shadows(lambda: [("smollm2@4", stats)])

    def read() -> dict[str, float]:
        out = {}
        for family in text_string_to_metric_families(metrics.render().decode()):
            for s in family.samples:
                if s.name.endswith("_total"):
                    assert s.labels == {"model_name": "smollm2@4"}
                    out[s.name] = s.value
        return out

    assert read()["tokenmill:shadow_compared_total"] == 0
    stats.compared, stats.greedy_compared, stats.exact_matches = 5, 4, 3
    stats.length_ratio_sum, stats.failures = 4.5, 1
    got = read()
    assert got["tokenmill:shadow_compared_total"] == 5
    assert got["tokenmill:shadow_greedy_compared_total"] == 4
    assert got["tokenmill:shadow_exact_matches_total"] == 3
    assert got["tokenmill:shadow_length_ratio_sum_total"] == 4.5
    assert got["tokenmill:shadow_failures_total"] == 1
