"""Without a C++ compiler tokenmill still serves, on its PyTorch path: the install step
says so and exits 0, the loader reports kernel_path "float32" (on every CPU: auto never
picks the lossy bfloat16), and the default model's greedy output equals the block
path's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tokenmill import LLM, SamplingParams
from tokenmill.model.kernels import cpu_kernels

PROMPT = [{"role": "user", "content": "Name three colours."}]

CHILD = """
import json
from tokenmill import LLM, SamplingParams
from tokenmill.model.kernels import cpu_kernels, quant_isa
assert cpu_kernels() is None, "the kernels built without a compiler"
llm = LLM(num_threads=1)
out = llm.chat({prompt}, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))
print(json.dumps({{"isa": quant_isa(), "kernel_path": llm.engine.loaded.kernel_path,
                  "ids": list(out[0].outputs[0].token_ids)}}))
"""


@pytest.fixture
def no_compiler_env(tmp_path):
    """An environment whose C++ compiler does not exist and whose kernel cache is empty."""
    env = dict(os.environ)
    env["CXX"] = str(tmp_path / "no-such-c++")
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def test_install_step_exits_zero_and_says_why(no_compiler_env):
    run = subprocess.run(
        [sys.executable, "-m", "tokenmill.model.kernels"],
        check=False,
        env=no_compiler_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "not built" in run.stderr and "PyTorch path" in run.stderr


@pytest.mark.slow
@pytest.mark.skipif(cpu_kernels() is None, reason="compares with the native block path")
def test_default_model_serves_without_kernels_and_agrees(no_compiler_env):
    child = subprocess.run(
        [sys.executable, "-c", CHILD.format(prompt=repr(PROMPT))],
        check=False,
        env=no_compiler_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    got = json.loads(child.stdout.strip().splitlines()[-1])
    assert got["isa"] == "none" and got["kernel_path"] == "float32"
    llm = LLM(num_threads=1)
    assert llm.engine.loaded.kernel_path.startswith("gguf-blocks:")
    ref = llm.chat(PROMPT, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))
    assert got["ids"] == list(ref[0].outputs[0].token_ids)
