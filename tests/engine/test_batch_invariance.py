"""In float32, and on the GGUF blocks with batch_invariant, a request's result must not
depend on what shares its batch."""

import pytest

from tokenmill import SamplingParams

from .conftest import CHATS, chat


@pytest.fixture(params=["llm32", "llm_invariant"])
def llm(request):
    return request.getfixturevalue(request.param)


def test_greedy_and_seeded_outputs_same_alone_and_in_a_batch_of_16(llm):
    greedy = SamplingParams(temperature=0.0, max_tokens=24)
    seeded = SamplingParams(temperature=0.9, top_p=0.95, seed=1234, max_tokens=24)
    alone_greedy = [llm.chat(chat(CHATS[i]), greedy)[0] for i in (0, 3)]
    alone_seeded = llm.chat(chat(CHATS[1]), seeded)[0]

    convs, params = [], []
    fillers = [SamplingParams(temperature=0.7, max_tokens=5 + i) for i in range(13)]
    for i, f in enumerate(fillers):
        convs.append(chat(CHATS[(i + 2) % len(CHATS)] + f" ({i})"))
        params.append(f)
    # The requests under test sit at different places among mixed neighbours.
    convs.insert(2, chat(CHATS[0]))
    params.insert(2, greedy)
    convs.insert(7, chat(CHATS[1]))
    params.insert(7, seeded)
    convs.insert(11, chat(CHATS[3]))
    params.insert(11, greedy)
    assert len(convs) == 16
    batch = llm.chat(convs, params)

    assert batch[2].outputs[0].token_ids == alone_greedy[0].outputs[0].token_ids
    assert batch[11].outputs[0].token_ids == alone_greedy[1].outputs[0].token_ids
    assert batch[7].outputs[0].token_ids == alone_seeded.outputs[0].token_ids
    assert len(alone_seeded.outputs[0].token_ids) > 0
    # The seed matters: another seed gives another continuation.
    other = llm.chat(chat(CHATS[1]), seeded.clone(seed=99))[0]
    assert other.outputs[0].token_ids != alone_seeded.outputs[0].token_ids
