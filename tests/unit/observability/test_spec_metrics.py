"""Speculative decoding's figures reach /metrics from the engine's stats."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.engine.factories import make_core, run_core
from tokenmill.config import SpeculativeConfig
from tokenmill.engine.request import GenerationRequest
from tokenmill.observability.metrics import EngineCollector
from tokenmill.sampling_params import SamplingParams


def test_acceptance_and_tokens_per_step_are_exported():
    core = make_core("abcdefg", speculative=SpeculativeConfig(mode="ngram"), max_model_len=128)
    params = SamplingParams(temperature=0.0, max_tokens=30)
    core.add_request(GenerationRequest("r", params, prompt="abcdefga"))
    run_core(core)
    stats = core.stats()
    registry = CollectorRegistry()
    registry.register(EngineCollector(lambda: [("m", stats)]))
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    assert samples["tokenmill:spec_decode_num_draft_tokens_total"] == stats.spec_draft_tokens > 0
    assert samples["tokenmill:spec_decode_num_accepted_tokens_total"] == stats.spec_accepted_tokens
    assert samples["tokenmill:spec_decode_acceptance_rate"] == 1.0
    # 30 tokens: the prefill step samples one, each verify step emits up to 5.
    assert samples["tokenmill:tokens_per_sequence_step"] == 30 / stats.sequence_steps
    assert stats.tokens_per_sequence_step == 30 / stats.sequence_steps > 3
