"""Fair shares of the batch (issue 14, item 3): between requests and between callers,
asserted as exact scheduling orders on factory requests."""

from tokenmill.engine.request import RequestStatus

from .factories import make_parent, make_request
from .test_scheduler import make_scheduler, run_step


def ids(requests) -> list[str]:
    return [r.request_id for r in requests]


def scheduled_ids(out) -> list[str]:
    return [s.request.request_id for s in out.scheduled]


def test_a_newcomer_takes_a_slot_from_a_request_holding_all_of_them():
    sched, _ = make_scheduler(max_seqs=4, budget=64)
    for r in make_parent("big", 4, prompt_len=4, max_tokens=50):
        sched.add(r)
    run_step(sched)
    assert ids(sched.running) == ["big#0", "big#1", "big#2", "big#3"]

    small = make_request(4, request_id="small", max_tokens=3)
    sched.add(small)
    out = run_step(sched)
    assert ids(out.preempted) == ["big#3"]
    assert scheduled_ids(out) == ["big#0", "big#1", "big#2", "small"]
    assert sched.num_fairness_preemptions == 1


def test_the_swap_is_not_undone_and_the_victim_returns_when_a_slot_frees():
    sched, _ = make_scheduler(max_seqs=4, budget=64)
    for r in make_parent("big", 4, prompt_len=4, max_tokens=50):
        sched.add(r)
    run_step(sched)
    small = make_request(4, request_id="small", max_tokens=3)
    sched.add(small)
    run_step(sched)
    while not small.is_finished:
        out = run_step(sched)
        assert out.preempted == []
        assert "big#3" not in scheduled_ids(out)
    out = run_step(sched)
    assert scheduled_ids(out)[-1] == "big#3" and sched.num_waiting == 0
    assert sched.num_preemptions == 1


def test_callers_share_slots_equally_then_requests_within_a_caller():
    sched, _ = make_scheduler(max_seqs=4, budget=64)
    for parent in ("x1", "x2"):
        for r in make_parent(parent, 2, caller="x", prompt_len=4, max_tokens=50):
            sched.add(r)
    run_step(sched)
    # Caller x's slots are dealt round-robin between its requests.
    assert ids(sched.fair_order()) == ["x1#0", "x2#0", "x1#1", "x2#1"]

    for r in make_parent("y1", 2, caller="y", prompt_len=4, max_tokens=50):
        sched.add(r)
    out = run_step(sched)
    assert ids(out.preempted) == ["x2#1", "x1#1"]
    assert sorted(scheduled_ids(out)) == ["x1#0", "x2#0", "y1#0", "y1#1"]
    assert ids(sched.fair_order()) == ["x1#0", "y1#0", "x2#0", "y1#1"]

    for _ in range(5):  # two slots each: stable, nothing more is preempted
        out = run_step(sched)
        assert out.preempted == [] and sched.num_waiting == 2


def test_a_second_request_of_the_same_caller_gets_a_slot_too():
    sched, _ = make_scheduler(max_seqs=3, budget=64)
    for r in make_parent("a", 3, caller="k", prompt_len=4, max_tokens=50):
        sched.add(r)
    run_step(sched)
    sched.add(make_request(4, request_id="b", caller="k", max_tokens=50))
    out = run_step(sched)
    assert ids(out.preempted) == ["a#2"]
    assert ids(sched.fair_order()) == ["a#0", "b", "a#1"]


def test_waiting_sequences_are_admitted_in_fair_order():
    sched, _ = make_scheduler(max_seqs=8, budget=64)
    for r in make_parent("p", 3, caller="x", prompt_len=4):
        sched.add(r)
    sched.add(make_request(4, request_id="q", caller="x"))
    sched.add(make_request(4, request_id="r", caller="y"))
    out = run_step(sched)
    assert scheduled_ids(out) == ["p#0", "r", "q", "p#1", "p#2"]


def test_a_higher_priority_newcomer_preempts_the_lowest_priority_sequence():
    sched, _ = make_scheduler(max_seqs=2, budget=64)
    low = make_request(4, request_id="low", priority=5, max_tokens=50)
    mid = make_request(4, request_id="mid", priority=0, max_tokens=50)
    sched.add(low)
    sched.add(mid)
    run_step(sched)
    urgent = make_request(4, request_id="urgent", priority=-1, max_tokens=50)
    sched.add(urgent)
    out = run_step(sched)
    assert ids(out.preempted) == ["low"]
    assert ids(sched.fair_order()) == ["urgent", "mid"]
    assert low.status is RequestStatus.PREEMPTED


def test_no_preemption_when_the_newcomer_is_no_fairer():
    sched, _ = make_scheduler(max_seqs=2, budget=64)
    for rid in ("a", "b"):
        sched.add(make_request(4, request_id=rid, max_tokens=50))
    run_step(sched)
    sched.add(make_request(4, request_id="c", max_tokens=50))
    for _ in range(5):
        out = run_step(sched)
        assert out.preempted == [] and scheduled_ids(out) == ["a", "b"]


def test_kv_pressure_preempts_the_largest_share_first():
    # 6 blocks of 4 tokens: five sequences fit, then the pool runs dry as they grow.
    sched, _ = make_scheduler(num_blocks=7, block_size=4, max_seqs=8, budget=64)
    big = make_parent("big", 4, prompt_len=3, max_tokens=20)
    small = make_request(3, request_id="small", max_tokens=20)
    for r in [*big, small]:
        sched.add(r)
    run_step(sched)
    victims = []
    for _ in range(3):
        victims += ids(run_step(sched).preempted)
    assert victims and victims[0] == "big#3" and "small" not in victims
