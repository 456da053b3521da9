"""Draft-model speculation on a tiny random Llama (float32, a second or so): the draft's
incremental cache proposes exactly what a fresh greedy run would, after any rollback;
greedy output is unchanged; draft caches are freed; a draft with another vocabulary is
refused at start."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.model import tiny
from tests.model.test_tiny_models import make_hf_model
from tokenmill import LLM
from tokenmill.config import SpeculativeConfig
from tokenmill.engine import draft_proposer
from tokenmill.engine.draft_proposer import DraftProposer, check_same_vocabulary
from tokenmill.engine.request import GenerationRequest
from tokenmill.errors import ConfigError
from tokenmill.model.loader import load_model
from tokenmill.sampling_params import SamplingParams

PROMPT = [40, 41, 42, 43, 44, 45, 46, 47, 48]
GREEDY = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    tok = tiny.build_tokenizer()
    model = make_hf_model("llama", tok.get_vocab_size())
    return str(tiny.save_hf(model, tok, tmp_path_factory.mktemp("tiny-draft")))


@pytest.fixture(scope="module")
def loaded(tiny_path):
    return load_model(tiny_path, "float32")


def _greedy(loaded, tokens: list[int], k: int) -> list[int]:
    """k greedy tokens after `tokens`, each from a full forward over the text (no cache
    reuse): the reference the incremental draft cache must reproduce."""
    fresh = DraftProposer(SpeculativeConfig(mode="draft:x", num_tokens=k), loaded, 128, 10**6)
    return fresh.propose("ref", tokens, 0, 10**6)


def test_proposals_match_a_fresh_greedy_run_after_every_rollback(loaded):
    proposer = DraftProposer(SpeculativeConfig(mode="draft:x", num_tokens=4), loaded, 128, 10**6)
    text = list(PROMPT)
    # Each round: the target keeps `keep` drafts then emits its own token 7 (a
    # rejection), or all of them plus a bonus token; the cache must follow every time.
    for keep in [0, 2, 4, 1, 3, 0, 4]:
        drafts = proposer.propose("s", text, 0, 10**6)
        assert drafts == _greedy(loaded, text, 4)
        assert len(drafts) == 4
        # The cache holds the text and every draft but the last.
        assert proposer.caches["s"].tokens == text + drafts[:-1]
        text = text + drafts[:keep] + [7 if keep < 4 else 9]


def test_drafts_stop_at_max_tokens_and_the_context_length(loaded):
    proposer = DraftProposer(SpeculativeConfig(mode="draft:x", num_tokens=4), loaded, 16, 10**6)
    assert len(proposer.propose("a", PROMPT, 0, 3)) == 2  # 2 drafts + 1 token = max_tokens
    assert proposer.propose("b", PROMPT, 2, 3) == []
    assert len(proposer.propose("c", PROMPT + [1] * 5, 0, 100)) == 2  # 14 + 2 = 16
    assert "b" not in proposer.caches  # nothing proposed, nothing kept


def test_the_cache_grows_and_keeps_what_it_held(loaded, monkeypatch):
    monkeypatch.setattr(draft_proposer, "MIN_CAPACITY", 16)
    proposer = DraftProposer(SpeculativeConfig(mode="draft:x", num_tokens=2), loaded, 128, 10**6)
    text = PROMPT + [5, 6, 7]
    first = proposer.propose("s", text, 0, 10**6)
    assert proposer.caches["s"].capacity == 16
    text = text + first + [5] * 10  # 24 tokens: the cache doubles, keeping its K/V
    assert proposer.propose("s", text, 0, 10**6) == _greedy(loaded, text, 2)
    assert proposer.caches["s"].capacity == 32


def test_greedy_output_is_identical_and_the_same_draft_is_accepted(tiny_path):
    common = {"dtype": "float32", "kv_cache_memory_gib": 0.05}
    plain = LLM(tiny_path, **common)
    spec = LLM(tiny_path, speculative=f"draft:{tiny_path}", **common)
    prompts = [PROMPT, PROMPT[:4], [7, 8, 9, 7, 8, 9, 7]]
    want = [o.outputs[0].token_ids for o in plain.generate(prompts, GREEDY)]
    got = [o.outputs[0].token_ids for o in spec.generate(prompts, GREEDY)]
    assert got == want
    st = spec.stats()
    # The draft is the target: every draft is the target's argmax, so (float32, same
    # weights) all are accepted, and each verify step emits k + 1 tokens.
    assert st.spec_draft_tokens > 40
    assert st.spec_accepted_tokens == st.spec_draft_tokens
    assert st.num_steps < 0.5 * plain.stats().num_steps
    assert spec.engine.speculator.draft.caches == {}
    assert st.kv_blocks_used == 0


def test_draft_caches_are_freed_on_abort(tiny_path):
    spec = LLM(
        tiny_path, dtype="float32", kv_cache_memory_gib=0.05, speculative=f"draft:{tiny_path}"
    )
    core = spec.engine
    draft = core.speculator.draft
    core.add_request(GenerationRequest("a", GREEDY, prompt_token_ids=PROMPT))
    core.add_request(GenerationRequest("b", GREEDY, prompt_token_ids=PROMPT[:5]))
    for _ in range(3):
        core.step()
    assert set(draft.caches) == {"a#0", "b#0"}
    core.abort("a")
    assert set(draft.caches) == {"b#0"}
    core.abort("b")
    assert draft.caches == {}


def test_draft_caches_follow_preemption(tiny_path):
    # 9 usable blocks of 16; two sequences growing to ~110 tokens need 14: one is
    # preempted, loses its draft cache, and recomputes it when it runs again.
    common = {"dtype": "float32", "num_kv_blocks": 10, "max_num_seqs": 2}
    params = GREEDY.clone(max_tokens=100)
    plain = LLM(tiny_path, **common)
    spec = LLM(tiny_path, speculative=f"draft:{tiny_path}", **common)
    core = spec.engine
    for rid in "ab":
        core.add_request(GenerationRequest(rid, params, prompt_token_ids=PROMPT))
    outputs = {}
    while core.has_unfinished():
        for out in core.step():
            outputs[out.request_id] = out
        running = {r.request_id for r in core.scheduler.running}
        assert set(core.speculator.draft.caches) <= running
    assert core.scheduler.num_preemptions > 0
    assert core.speculator.draft.caches == {}
    want = plain.generate([PROMPT], params)[0].outputs[0].token_ids
    assert outputs["a"].outputs[0].token_ids == want == outputs["b"].outputs[0].token_ids


def test_a_draft_with_another_vocabulary_is_refused(tiny_path, tmp_path):
    tok = tiny.build_tokenizer()
    tok.add_tokens(["<extra>"])
    other = make_hf_model("llama", tok.get_vocab_size())
    path = tiny.save_hf(other, tok, tmp_path / "other")
    with pytest.raises(ConfigError, match="vocabulary sizes differ") as err:
        LLM(tiny_path, dtype="float32", kv_cache_memory_gib=0.05, speculative=f"draft:{path}")
    assert err.value.setting == "speculative"


def _fake(vocab: dict[str, int], eos: int = 0):
    backend = SimpleNamespace(get_vocab=lambda with_added_tokens=True: dict(vocab))
    return SimpleNamespace(name="m", tokenizer=SimpleNamespace(backend=backend, eos_token_id=eos))


def test_vocabulary_check_compares_ids_and_eos():
    base = {"a": 0, "b": 1, "c": 2}
    check_same_vocabulary(_fake(base), _fake(dict(base)))
    with pytest.raises(ConfigError, match="token ids differ.*'a'"):
        check_same_vocabulary(_fake(base), _fake({"a": 1, "b": 0, "c": 2}))
    with pytest.raises(ConfigError, match="end-of-sequence"):
        check_same_vocabulary(_fake(base), _fake(base, eos=2))


def test_draft_mode_config():
    assert SpeculativeConfig(mode="draft:smollm2-135m").draft_model == "smollm2-135m"
    assert SpeculativeConfig(mode="ngram").draft_model is None
    with pytest.raises(ConfigError, match="needs a model"):
        SpeculativeConfig(mode="draft:")


def test_a_poor_draft_changes_nothing_and_is_turned_off(tiny_path, tmp_path):
    # Another random model with the same tokenizer: its drafts are mostly rejected, the
    # output is still the target's, and auto-off frees the cache while the sequence runs.
    tok = tiny.build_tokenizer()
    path = tiny.save_hf(make_hf_model("qwen2", tok.get_vocab_size()), tok, tmp_path / "poor")
    common = {"dtype": "float32", "kv_cache_memory_gib": 0.05}
    plain = LLM(tiny_path, **common)
    spec = LLM(tiny_path, speculative=f"draft:{path}", **common)
    params = GREEDY.clone(max_tokens=60)
    core = spec.engine
    core.add_request(GenerationRequest("r", params, prompt_token_ids=PROMPT))
    req = core._children["r"][0]
    while core.has_unfinished():
        core.step()
        if req.spec.disabled and not req.is_finished:
            assert core.speculator.draft.caches == {}
    assert req.spec.disabled
    st = spec.stats()
    assert st.spec_accepted_tokens < 0.3 * st.spec_draft_tokens
    assert req.output_token_ids == plain.generate([PROMPT], params)[0].outputs[0].token_ids


def test_an_unknown_draft_model_is_a_speculative_setting_error(tiny_path):
    with pytest.raises(ConfigError, match="draft:nope-model: the draft model cannot be loaded"):
        LLM(tiny_path, dtype="float32", kv_cache_memory_gib=0.05, speculative="draft:nope-model")
