"""Scheduler invariants, driven by a fake model whose next token is a pure function
of the sequence so far (so recompute after preemption must reproduce it)."""

import itertools

from tokenmill.config import SchedulerConfig
from tokenmill.engine.kv_cache.manager import KVCacheManager
from tokenmill.engine.request import RequestStatus
from tokenmill.engine.scheduler import MAX_HEAD_BYPASS_STEPS, Scheduler

from .factories import make_request


def fake_next_token(tokens: list[int]) -> int:
    return (sum(t * (i + 1) for i, t in enumerate(tokens)) % 251) + 3


def run_step(sched: Scheduler) -> list:
    out = sched.schedule()
    sched.update_after_step(out)
    for s in out.scheduled:
        r = s.request
        if r.num_computed_tokens == r.num_tokens:
            r.output_token_ids.append(fake_next_token(r.token_ids_slice(0, r.num_tokens)))
            if len(r.output_token_ids) >= r.max_tokens:
                sched.finish(r, RequestStatus.FINISHED_LENGTH)
    return out


def make_scheduler(num_blocks=64, block_size=4, budget=32, max_seqs=8, prefill_cap=None):
    kv = KVCacheManager(num_blocks, block_size)
    cfg = SchedulerConfig(
        max_num_seqs=max_seqs,
        max_num_batched_tokens=budget,
        max_prefill_tokens_when_busy=prefill_cap,
    )
    return Scheduler(cfg, kv), kv


def run_until(sched, done, max_steps: int) -> list:
    """Steps until `done(history)` holds; fails if it still does not after max_steps
    (a scheduler that stops making progress must fail the test, not hang it)."""
    history = []
    for _ in range(max_steps):
        if done(history):
            return history
        history.append(run_step(sched))
    assert done(history), f"not done after {max_steps} steps"
    return history


def run_to_end(sched, max_steps=1_000):
    return run_until(sched, lambda _: not sched.has_unfinished(), max_steps)


def expected_output(prompt, max_tokens):
    toks = list(prompt)
    out = []
    for _ in range(max_tokens):
        t = fake_next_token(toks)
        out.append(t)
        toks.append(t)
    return out


def test_token_budget_and_seq_limit_never_exceeded():
    sched, kv = make_scheduler(budget=20, max_seqs=3)
    reqs = [make_request(p, max_tokens=5) for p in (3, 30, 7, 50, 2, 11)]
    for r in reqs:
        sched.add(r)
    for out in run_to_end(sched):
        assert out.num_tokens <= 20
        assert len(out.scheduled) <= 3
    for r in reqs:
        assert r.output_token_ids == expected_output(r.prompt_token_ids, 5)
    assert kv.pool.num_used == 0


def test_long_prompt_is_chunked_and_shares_steps_with_decodes():
    sched, _ = make_scheduler(budget=16)
    short = make_request(4, max_tokens=20)
    sched.add(short)
    run_step(sched)  # short's prefill; now decoding
    long = make_request(40, max_tokens=2)
    sched.add(long)
    out = run_step(sched)
    shares = {s.request.request_id: s.num_new_tokens for s in out.scheduled}
    assert shares == {short.request_id: 1, long.request_id: 15}
    out = run_step(sched)
    assert {s.request.request_id: s.num_new_tokens for s in out.scheduled} == {
        short.request_id: 1,
        long.request_id: 15,
    }


def shares_of(out) -> dict[str, int]:
    return {s.request.request_id: s.num_new_tokens for s in out.scheduled}


def distinct_prompt(length: int, first: int) -> list[int]:
    """A prompt no other shares a block with (the prefix cache would serve shared ones)."""
    return [first + i for i in range(length)]


def test_prefill_is_capped_only_while_the_engine_is_busy():
    sched, _ = make_scheduler(num_blocks=128, budget=64, prefill_cap=8)
    long = make_request(prompt=distinct_prompt(40, 1000), max_tokens=2)
    sched.add(long)
    assert shares_of(run_step(sched)) == {long.request_id: 40}  # alone: the full budget
    run_to_end(sched)

    # Two prompts arriving at an idle engine (the soak's burst of bench prompts): the cap.
    pair = [make_request(prompt=distinct_prompt(20, 1000 * i), max_tokens=2) for i in (5, 6)]
    for r in pair:
        sched.add(r)
    assert shares_of(run_step(sched)) == {pair[0].request_id: 8}
    run_to_end(sched)

    decoder = make_request(prompt=distinct_prompt(4, 2000), max_tokens=50)
    sched.add(decoder)
    run_step(sched)
    long = make_request(prompt=distinct_prompt(40, 3000), max_tokens=2)
    sched.add(long)
    chunks = []
    while long.num_computed_tokens < 40:
        out = run_step(sched)
        assert shares_of(out)[decoder.request_id] == 1
        chunks.append(shares_of(out)[long.request_id])
    assert chunks == [8] * 5


def test_a_short_newcomer_prefills_ahead_of_a_long_prompt_in_progress():
    # The probe of issue 14's soak: a small chat arriving while a long prompt is chunked
    # beside the decodes gets its whole prompt into the very next step.
    sched, _ = make_scheduler(num_blocks=128, budget=64, prefill_cap=8)
    decoder = make_request(prompt=distinct_prompt(4, 100), max_tokens=60)
    sched.add(decoder)
    run_step(sched)
    long = make_request(prompt=distinct_prompt(60, 1000), max_tokens=2)
    sched.add(long)
    run_step(sched)
    assert long.num_computed_tokens == 8
    short = make_request(prompt=distinct_prompt(6, 5000), max_tokens=2)
    sched.add(short)
    # Its step carries only the decodes and its own prompt: the long prompt's chunk waits
    # one step and then goes first.
    assert shares_of(run_step(sched)) == {decoder.request_id: 1, short.request_id: 6}
    assert shares_of(run_step(sched)) == {
        decoder.request_id: 1,
        short.request_id: 1,
        long.request_id: 8,
    }


def test_newcomers_cannot_starve_a_long_prompt():
    # A short newcomer every step, each taking the whole prefill cap. Short prompts are
    # admitted ahead of the long one for at most MAX_HEAD_BYPASS_STEPS steps; once it
    # runs, a step that gave it nothing puts it first in the next, so it advances at
    # least every other step.
    sched, _ = make_scheduler(num_blocks=1024, budget=64, prefill_cap=8, max_seqs=64)
    decoder = make_request(prompt=distinct_prompt(4, 100), max_tokens=500)
    sched.add(decoder)
    run_step(sched)
    long = make_request(prompt=distinct_prompt(40, 1000), max_tokens=2)
    sched.add(long)
    progress = []
    for step in range(40):
        sched.add(make_request(prompt=distinct_prompt(8, 10_000 + 100 * step), max_tokens=1))
        before = long.num_computed_tokens
        run_step(sched)
        progress.append(min(long.num_computed_tokens, 40) - min(before, 40))
    assert sum(progress) == 40, progress  # the whole prompt within the 40 steps
    first = next(i for i, p in enumerate(progress) if p)
    assert first == MAX_HEAD_BYPASS_STEPS, progress  # the newcomers did go first, boundedly
    prefill = progress[first : max(i for i, p in enumerate(progress) if p) + 1]
    assert all(a or b for a, b in itertools.pairwise(prefill)), progress
    assert 0 in prefill, progress  # the newcomers did take whole steps from it


def test_no_empty_grant_when_a_starved_prompt_takes_the_whole_cap():
    # Found by the 30-minute soak: nothing decoding, two prompts chunked, the starved one
    # took the whole cap, and a 1-token newcomer was then admitted with 0 tokens, which
    # the model runner cannot place (the engine thread died with a KeyError).
    sched, _ = make_scheduler(num_blocks=128, budget=64, prefill_cap=8)
    a = make_request(prompt=distinct_prompt(40, 1000), max_tokens=2)
    b = make_request(prompt=distinct_prompt(40, 2000), max_tokens=2)
    sched.add(a)
    sched.add(b)
    run_step(sched)
    run_step(sched)  # b starts; a gets nothing and is starved
    sched.add(make_request(prompt=[5000], max_tokens=2))
    for out in run_to_end(sched):
        assert all(s.num_new_tokens >= 1 for s in out.scheduled), shares_of(out)


def test_a_short_prompt_is_admitted_ahead_of_a_burst_of_long_ones():
    # Issue 14's soak: four 64-token prompts arrive together, then a small chat. With
    # slots free, the chat's whole prompt goes into the next step.
    sched, _ = make_scheduler(num_blocks=256, budget=64, prefill_cap=16)
    decoder = make_request(prompt=distinct_prompt(4, 100), max_tokens=60)
    sched.add(decoder)
    run_step(sched)
    burst = [
        make_request(prompt=distinct_prompt(64, 1000 * (i + 1)), max_tokens=2) for i in range(4)
    ]
    for r in burst:
        sched.add(r)
    first = shares_of(run_step(sched))
    assert first == {decoder.request_id: 1, burst[0].request_id: 16}
    chat = make_request(prompt=distinct_prompt(12, 9000), max_tokens=2)
    sched.add(chat)
    assert shares_of(run_step(sched)) == {decoder.request_id: 1, chat.request_id: 12}


def test_priority_then_fcfs_admission():
    sched, _ = make_scheduler(budget=4, max_seqs=1)
    a = make_request(4, priority=1, max_tokens=1)
    b = make_request(4, priority=0, max_tokens=1)
    c = make_request(4, priority=0, max_tokens=1)
    for r in (a, b, c):
        sched.add(r)
    order = []
    for out in run_to_end(sched, max_steps=20):
        for s in out.scheduled:
            if s.request.request_id not in order:
                order.append(s.request.request_id)
    assert order == [b.request_id, c.request_id, a.request_id]


def test_preemption_recomputes_to_the_same_output():
    # 9 usable blocks of 4 tokens; three requests that grow to 6 blocks each.
    sched, kv = make_scheduler(num_blocks=10, block_size=4, budget=64)
    reqs = [make_request(8, max_tokens=14) for _ in range(3)]
    for r in reqs:
        sched.add(r)
    history = run_to_end(sched)
    assert sched.num_preemptions > 0
    assert any(out.preempted for out in history)
    for r in reqs:
        assert r.output_token_ids == expected_output(r.prompt_token_ids, 14)
    assert kv.pool.num_used == 0 and kv.num_seqs == 0


def test_preemption_takes_the_lowest_priority_latest_request():
    sched, _ = make_scheduler(num_blocks=5, block_size=4, budget=64)
    hi = make_request(8, priority=0, max_tokens=12)
    lo = make_request(7, priority=5, max_tokens=12)
    sched.add(hi)
    sched.add(lo)
    history = run_until(sched, lambda h: bool(h) and bool(h[-1].preempted), max_steps=40)
    # 4 usable blocks: both prompts fit (2 + 2), and hi's first decode needs a fifth.
    assert len(history) == 2
    assert lo.status == RequestStatus.PREEMPTED and lo.num_computed_tokens == 0
    assert hi.status == RequestStatus.RUNNING


def test_abort_frees_everything_at_any_point():
    sched, kv = make_scheduler(budget=8)
    running = make_request(20, max_tokens=50)
    waiting = make_request(10, max_tokens=5)
    sched.add(running)
    run_step(sched)  # running is mid-prefill (8 of 20)
    assert running.num_computed_tokens == 8
    sched.add(waiting)
    sched.finish(running, RequestStatus.FINISHED_ABORTED)
    sched.finish(waiting, RequestStatus.FINISHED_ABORTED)
    assert kv.pool.num_used == 0 and kv.num_seqs == 0
    assert not sched.has_unfinished()
    assert sched.schedule().scheduled == []


def test_queue_time_is_set_once_at_first_admission():
    sched, _ = make_scheduler(max_seqs=1)
    first, second = make_request(8, max_tokens=3), make_request(8, max_tokens=3)
    sched.add(first)
    sched.add(second)
    run_step(sched)
    assert first.queue_time_s is not None and first.queue_time_s >= 0
    assert second.queue_time_s is None  # still waiting behind max_seqs=1
    admitted_at = first.first_scheduled_time
    run_to_end(sched)
    assert first.first_scheduled_time == admitted_at
    assert second.first_scheduled_time >= admitted_at
    # second arrived before the first step, so it queued at least from then until its own
    # admission (comparing the two queue times instead hangs on the instant between the
    # two make_request calls, which a GC pause can stretch)
    assert second.queue_time_s >= second.first_scheduled_time - admitted_at
