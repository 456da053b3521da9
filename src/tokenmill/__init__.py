"""tokenmill: an LLM inference engine and OpenAI-compatible server."""

from tokenmill.sampling_params import SamplingParams

__version__ = "0.1.0"
__all__ = ["LLM", "SamplingParams", "__version__"]


def __getattr__(name: str):
    # The engine pulls in torch and the model code: load it only when asked for.
    if name == "LLM":
        from tokenmill.engine.llm import LLM

        return LLM
    raise AttributeError(name)
