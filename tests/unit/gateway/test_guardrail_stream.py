"""StreamRedactor: whatever the split into deltas, the stream releases exactly the
whole-text redaction, never a character of a span early, and holds back a bounded tail."""

import itertools
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.gateway.guardrail_factories import make_detector, pii_texts
from tokenmill.gateway.guardrails.segments import segment_end, split_segments
from tokenmill.gateway.guardrails.stream import StreamRedactor

TEXTS = pii_texts()
# Real examples joined into chat-length outputs, with paragraph breaks between some.
OUTPUTS = [" ".join(TEXTS[i : i + 6]) for i in range(0, len(TEXTS), 6)] + [
    "\n\n".join(TEXTS[i : i + 3]) for i in range(0, len(TEXTS), 9)
]


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


def stream(redactor: StreamRedactor, deltas: list[str], whole: str) -> str:
    """Feed `deltas`; after every feed, what was released must be a prefix of `whole`."""
    released = ""
    for delta in deltas:
        released += redactor.feed(delta)
        assert whole.startswith(released), (released, whole)
    return released + redactor.flush()


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="ab Ab.!?\n\"')x7@", max_size=120),
    cuts=st.lists(st.integers(min_value=0), max_size=30),
    max_chars=st.integers(min_value=32, max_value=48),
)
def test_segment_ends_are_prefix_stable(text, cuts, max_chars):
    """Cutting a stream segment by segment, as it grows, gives the whole text's cuts."""
    ends, offset, held = [], 0, ""
    for delta in split(text, cuts):
        held += delta
        while (end := segment_end(held, max_chars, final=False)) is not None:
            assert end > 0, "an empty segment: the loop would never end"
            offset += end
            ends.append(offset)
            held = held[end:]
    while (end := segment_end(held, max_chars, final=True)) is not None:
        assert end > 0, "an empty segment: the loop would never end"
        offset += end
        ends.append(offset)
        held = held[end:]
    assert ends == list(split_segments(text, max_chars))


@settings(max_examples=200, deadline=None)
@given(
    index=st.integers(min_value=0, max_value=len(OUTPUTS) - 1),
    cuts=st.lists(st.integers(min_value=0), max_size=60),
    max_chars=st.sampled_from([40, 120, 400]),
)
def test_stream_equals_whole_text_redaction_for_any_split(index, cuts, max_chars):
    detector = make_detector(max_segment_chars=max_chars)
    text = OUTPUTS[index]
    whole = detector.scan(text).text
    assert stream(StreamRedactor(detector), split(text, cuts), whole) == whole


def test_an_email_one_character_per_delta_never_leaks():
    detector = make_detector()
    text = "Sure, write to maria.gonzalez@example.org and she will answer"
    whole = detector.scan(text).text
    redactor = StreamRedactor(detector)
    assert stream(redactor, list(text), whole) == (
        "Sure, write to <EMAIL_ADDRESS> and she will answer"
    )
    assert redactor.entity_types == ("EMAIL_ADDRESS",)
    assert redactor.changed


def test_a_name_split_across_deltas_never_leaks():
    detector = make_detector()
    deltas = ["Your contact is Mar", "ia Gonz", "alez", ". Her card is 4111 ", "1111 1111 1111."]
    redactor = StreamRedactor(detector)
    outputs = [redactor.feed(d) for d in deltas] + [redactor.flush()]
    assert outputs[:3] == ["", "", ""]  # the sentence is unfinished: nothing may go out
    assert "".join(outputs) == "Your contact is <PERSON>. Her card is <CREDIT_CARD>."
    assert not any(fragment in "".join(outputs) for fragment in ("Mar", "Gonz", "4111"))


def test_hold_back_is_bounded_without_sentence_ends():
    detector = make_detector(max_segment_chars=64)
    redactor = StreamRedactor(detector)
    released = ""
    prose = "the quick brown fox jumps over the lazy dog and keeps running " * 8
    for char in prose:
        released += redactor.feed(char)
        assert redactor.held <= 64
    assert released + redactor.flush() == prose
    assert len(released) >= len(prose) - 64


def test_hold_back_is_bounded_in_text_without_spaces():
    detector = make_detector(max_segment_chars=64)
    redactor = StreamRedactor(detector)
    blob = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo" * 10
    released = "".join(redactor.feed(blob[i : i + 7]) for i in range(0, len(blob), 7))
    assert redactor.held <= 64
    assert released + redactor.flush() == blob


def test_plain_text_passes_unchanged_and_unflagged():
    detector = make_detector()
    redactor = StreamRedactor(detector)
    text = "Paris is the capital of France. It has 2.1 million people.\nVersion 3.10.4 is out."
    assert stream(redactor, [text[i : i + 5] for i in range(0, len(text), 5)], text) == text
    assert not redactor.changed and redactor.entity_types == ()


def test_feed_after_flush_is_an_error():
    redactor = StreamRedactor(make_detector())
    redactor.flush()
    try:
        redactor.feed("more")
    except RuntimeError:
        return
    raise AssertionError("feed after flush must raise")


def test_lazy_loading_loads_once_under_concurrent_first_calls():
    detector = make_detector(load_seconds=0.2)
    barrier = threading.Barrier(8)
    results = []

    def first_call():
        barrier.wait()
        results.append(detector.scan("Ask Chen Wei at chen@example.com").text)

    threads = [threading.Thread(target=first_call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert detector._backend.loads == 1
    assert results == ["Ask <PERSON> at <EMAIL_ADDRESS>"] * 8


def pieces(text: str, max_chars: int = 400) -> list[str]:
    starts = [0, *split_segments(text, max_chars)]
    return [text[a:b] for a, b in itertools.pairwise(starts)]


def test_segments_end_at_sentences_and_lines_but_not_after_titles_or_initials():
    assert pieces("Ask Dr. Jane Doe. J. R. R. Tolkien wrote it!\nDone") == [
        "Ask Dr. Jane Doe. ",
        "J. R. R. Tolkien wrote it!\n",
        "Done",
    ]


def test_a_long_sentence_is_cut_between_lower_case_words_not_inside_a_name():
    text = "we met " + "and talked " * 5 + "with Ana Maria Lopez today"
    first, rest = pieces(text, max_chars=70)
    assert len(first) <= 70 and first.endswith("talked ")
    assert rest.endswith("with Ana Maria Lopez today")
