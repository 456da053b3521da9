import pytest

from tokenmill import LLM


@pytest.fixture(scope="session")
def llm32():
    """The default model in float32, where batch composition must not change results."""
    return LLM(dtype="float32", kv_cache_memory_gib=0.5)


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
