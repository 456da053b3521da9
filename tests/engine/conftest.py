import pytest

from tokenmill import LLM


@pytest.fixture(scope="session")
def llm32():
    """The default model in float32, where batch composition must not change results."""
    return LLM(dtype="float32", kv_cache_memory_gib=0.5)


@pytest.fixture(scope="module")
def llm_invariant():
    """The default model on its GGUF blocks with batch_invariant (on AMX CPUs the one
    arithmetic for every batch size); the kernels' process-wide choice is restored."""
    from tokenmill.model.kernels import select_isa

    yield LLM(batch_invariant=True, kv_cache_memory_gib=0.5)
    select_isa()


CHATS = [
    "What is the capital of France?",
    "Write a haiku about rust.",
    "List three prime numbers.",
    "Explain photosynthesis in one sentence.",
    "Translate 'good morning' to Spanish.",
    "What is 17 times 3?",
    "Name a famous painter.",
    "Why is the sky blue?",
]


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]
