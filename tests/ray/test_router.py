"""Unit tests of the prefix-affinity router's choice, the prefix key and RayConfig
(fake replicas: no Ray cluster)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from tokenmill.config import AppConfig, RayConfig
from tokenmill.errors import ConfigError
from tokenmill.ray.forwarding import ForwardedRequest, prompt_prefix_key
from tokenmill.ray.router import PrefixAffinityRouter


@dataclass(frozen=True)
class FakeReplica:
    replica_id: str


@dataclass
class FakePending:
    args: list


class FakeQueueLens:
    def __init__(self, lens: dict[str, int]):
        self.lens = lens

    def get(self, replica_id):
        return self.lens.get(replica_id)


def router(lens: dict[str, int], imbalance: int = 4) -> PrefixAffinityRouter:
    r = PrefixAffinityRouter.__new__(PrefixAffinityRouter)
    r._replica_queue_len_cache = FakeQueueLens(lens)
    r.initialize_state(imbalance=imbalance)
    return r


def pending(key: str | None) -> FakePending:
    return FakePending([ForwardedRequest("POST", "/v1/completions", "", (), b"{}", key)])


REPLICAS = [FakeReplica("a"), FakeReplica("b"), FakeReplica("c")]


def choose(r: PrefixAffinityRouter, key: str | None):
    return asyncio.run(r.choose_replicas(REPLICAS, pending(key)))


def test_a_new_prefix_gets_two_random_candidates():
    ranks = choose(router({}), "k1")
    assert len(ranks) == 1 and len(ranks[0]) == 2 and len(set(ranks[0])) == 2


def test_a_known_prefix_ranks_its_replica_first():
    r = router({"a": 1, "b": 0, "c": 0})
    r.on_request_routed(pending("k1"), "a", None)
    for _ in range(20):
        ranks = choose(r, "k1")
        assert ranks[0] == [REPLICAS[0]]
        assert REPLICAS[0] not in ranks[1]


def test_an_overloaded_prefix_replica_is_passed_over():
    r = router({"a": 9, "b": 2, "c": 3}, imbalance=4)
    r.on_request_routed(pending("k1"), "a", None)
    for _ in range(20):
        ranks = choose(r, "k1")
        assert len(ranks) == 1 and len(ranks[0]) == 2  # power of two choices only


def test_a_dead_replica_loses_its_prefixes():
    r = router({})
    r.on_request_routed(pending("k1"), "a", None)
    r.on_request_routed(pending("k2"), "b", None)
    r._replicas, r._replica_id_set, r._queue_len_gauge_last_update = {}, set(), {}
    r.on_replica_actor_died("a")
    assert "k1" not in r.owners and r.owners["k2"] == "b"


def test_the_prefix_table_is_bounded():
    r = router({})
    r.initialize_state(max_prefixes=3)
    for i in range(10):
        r.on_request_routed(pending(f"k{i}"), "a", None)
    assert list(r.owners) == ["k7", "k8", "k9"]


def test_prefix_key_reads_prompts_and_messages():
    long = "x" * 300
    a = prompt_prefix_key({"prompt": long + "one"}, 256)
    b = prompt_prefix_key({"prompt": long + "two"}, 256)
    assert a == b and a is not None
    assert prompt_prefix_key({"prompt": "short one"}, 256) != prompt_prefix_key(
        {"prompt": "short two"}, 256
    )
    chat = {"messages": [{"role": "system", "content": long}, {"role": "user", "content": "q"}]}
    other = {"messages": [{"role": "system", "content": long}, {"role": "user", "content": "r"}]}
    assert prompt_prefix_key(chat, 256) == prompt_prefix_key(other, 256)
    assert prompt_prefix_key({"prompt": long}, 0) is None
    assert prompt_prefix_key({"input": "embed me"}, 256) is None
    assert prompt_prefix_key(["not", "a", "dict"], 256) is None


def test_ray_config_replicas_or_autoscaling():
    assert RayConfig(replicas=3).deployment_options() == {"num_replicas": 3}
    auto = RayConfig(min_replicas=1, max_replicas=4, target_ongoing_requests=8)
    assert auto.deployment_options() == {
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8}
    }
    with pytest.raises(ConfigError, match="max_replicas"):
        RayConfig(min_replicas=3, max_replicas=2)
    with pytest.raises(ConfigError, match="replicas"):
        RayConfig(replicas=0)


def test_rayservice_args_and_environment_make_the_config():
    from tokenmill.ray.app import config_from_mapping

    config = config_from_mapping(
        {"min_replicas": 2, "max_replicas": 8, "target_ongoing_requests": 16},
        {"TOKENMILL_REDIS_URL": "redis://r:6379/0", "TOKENMILL_MAX_NUM_SEQS": "32"},
    )
    assert isinstance(config, AppConfig)
    assert config.ray.deployment_options()["autoscaling_config"]["max_replicas"] == 8
    assert config.gateway.redis_url == "redis://r:6379/0"
    assert config.engine.scheduler.max_num_seqs == 32
    with pytest.raises(ConfigError, match="unknown|invalid"):
        config_from_mapping({"replicas": "many"}, {})


def test_a_models_file_is_one_registry_deployment_for_all_its_names(tmp_path, capsys):
    from tokenmill.cli.main import main
    from tokenmill.config.setting import build
    from tokenmill.ray.app import REGISTRY_DEPLOYMENT, _deployment_names

    models = tmp_path / "models.toml"
    models.write_text(
        '[[models]]\nname = "lm"\nversion = "1"\ntraffic = 90\n\n'
        '[[models]]\nname = "lm"\nversion = "2"\nquantization = "int8"\ntraffic = 10\n\n'
        '[[models]]\nname = "minilm"\nversion = "1"\ntask = "embed"\n'
    )
    config = build(AppConfig, {"ray": True, "models": str(models)})
    assert _deployment_names(config) == {"lm": REGISTRY_DEPLOYMENT, "minilm": REGISTRY_DEPLOYMENT}
    one = build(AppConfig, {"ray": True, "served_model_name": "tiny"})
    assert _deployment_names(one) == {"tiny": "model-tiny"}
    # A models file that cannot be served fails before Ray starts.
    models.write_text('[[models]]\nname = "m"\nversion = "1"\nsource = "no-such-model"\n')
    assert main(["serve", "--ray", "--models", str(models)], env={}) == 1
    err = capsys.readouterr().err
    assert "Unknown model 'no-such-model'" in err and "Ray Serve" not in err
