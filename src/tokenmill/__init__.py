"""tokenmill: an LLM inference engine and OpenAI-compatible server."""

import os
import sys
import warnings

# libgomp reads this once, when torch loads, so it is set here, before anything imports
# torch (a program that imported torch first keeps its own setting). Threads that spin
# while waiting turn any competition for the cores (the HTTP loop, a load generator,
# another process) into a collapse: measured on 2 cores beside one busy process, a
# 100-token prefill took 6.9 s with spinning waiters and 0.12 s with sleeping ones.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
elif os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
    warnings.warn(
        "torch was imported before tokenmill with OMP_WAIT_POLICY unset: on a busy CPU its "
        "threads spin and inference can slow tenfold. Set OMP_WAIT_POLICY=PASSIVE in the "
        "environment, or import tokenmill first.",
        RuntimeWarning,
        stacklevel=2,
    )

from importlib import metadata

from tokenmill.sampling_params import SamplingParams

try:
    __version__ = metadata.version("tokenmill")  # pyproject.toml is the one source
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
__all__ = ["LLM", "SamplingParams", "__version__"]


def __getattr__(name: str):
    # The engine pulls in torch and the model code: load it only when asked for.
    if name == "LLM":
        from tokenmill.engine.llm import LLM

        return LLM
    raise AttributeError(name)
