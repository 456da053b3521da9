"""How each peer is started under a core plan: the same threads and CPUs for every server,
and the bytes a decode step reads (the bandwidth bound's divisor)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tokenmill.bench.lineup import LLAMA, TOKENMILL, PeerDef, StartContext, server_spec
from tokenmill.bench.pinning import CorePlan
from tokenmill.bench.weights import decode_bytes

PLAN = CorePlan("single", (0,), (1,), 1)


def context(max_concurrency: int = 8, max_tokens: int = 228) -> StartContext:
    return StartContext(
        gguf=Path("/models/m.gguf"),
        log_dir=Path("/tmp/logs"),
        llama_binary=Path("/opt/llama-server"),
        transformers_dtype="float32",
        startup_timeout_s=900.0,
        max_concurrency=max_concurrency,
        max_tokens_per_request=max_tokens,
    )


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_servers_get_the_plans_threads_and_cpus():
    variant = PeerDef("tokenmill int8", TOKENMILL, ("--quantization", "int8"))
    for defn in (PeerDef(TOKENMILL, TOKENMILL), variant, PeerDef(LLAMA, LLAMA)):
        spec = server_spec(defn, PLAN, context())
        assert spec.cpus == (1,) and spec.env == {"OMP_NUM_THREADS": "1"}
        assert spec.startup_timeout_s == 900.0
    tm = server_spec(variant, PLAN, context())
    assert flag(tm.argv, "--num-threads") == "1" and tm.argv[-2:] == ["--quantization", "int8"]
    llama = server_spec(PeerDef(LLAMA, LLAMA), PLAN, context())
    assert llama.argv[0] == "/opt/llama-server" and flag(llama.argv, "-m") == "/models/m.gguf"
    assert flag(llama.argv, "-t") == "1" and flag(llama.argv, "-tb") == "1"


def test_llama_server_gets_a_slot_per_stream_fitting_the_longest_request():
    # 228 tokens + 64 margin = 292, rounded up to 512 per slot; 8 slots.
    argv = server_spec(PeerDef(LLAMA, LLAMA), PLAN, context(8, 228)).argv
    assert flag(argv, "--parallel") == "8" and flag(argv, "-c") == str(8 * 512)
    # Exactly on a boundary stays there: 8128 + 64 = 8192.
    argv = server_spec(PeerDef(LLAMA, LLAMA), PLAN, context(1, 8128)).argv
    assert flag(argv, "--parallel") == "1" and flag(argv, "-c") == "8192"


class Toy(nn.Module):
    """embed 10 x 4 float32 (160 B), one 4 x 4 float32 layer (64 B), a non-persistent
    table, and a head that is tied (None) or its own bfloat16 10 x 4 matrix (80 B)."""

    def __init__(self, tied: bool) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(10, 4)
        self.layer = nn.Linear(4, 4, bias=False)
        self.register_buffer("cos", torch.zeros(1000), persistent=False)
        self.lm_head = None if tied else nn.Linear(4, 10, bias=False).to(torch.bfloat16)


def test_a_tied_head_reads_the_embedding_table_once():
    nbytes, text = decode_bytes(Toy(tied=True))
    assert nbytes == 160 + 64
    assert text == "float32 0.0 MB; tied head reads the embedding table"


def test_an_untied_model_gathers_embedding_rows_and_reads_its_head():
    nbytes, text = decode_bytes(Toy(tied=False))
    assert nbytes == 64 + 80
    # Larger share first: the bfloat16 head (80 B) before the float32 layer (64 B).
    assert text == "bfloat16 0.0 MB, float32 0.0 MB; embedding table gathered, not read"


def test_a_weight_shared_by_two_modules_counts_once():
    model = Toy(tied=True)
    model.twin = model.layer
    assert decode_bytes(model)[0] == 160 + 64


def test_gguf_block_matrices_count_and_a_tied_block_head_reads_the_table_once():
    from gguf import GGMLQuantizationType as T

    from tokenmill.model.kernels import cpu_kernels
    from tokenmill.model.quant.blocks import BlockEmbedding, BlockLinear, BlockWeight

    if cpu_kernels() is None:
        pytest.skip("block modules need the native kernels")
    rows = torch.zeros(4, 34, dtype=torch.uint8)  # 4 rows of one Q8_0 block (32 weights)
    table = BlockWeight(torch.zeros(10, 34, dtype=torch.uint8), int(T.Q8_0), 32)
    model = nn.Module()
    model.embed_tokens = BlockEmbedding(table)
    model.layer = BlockLinear(BlockWeight(rows, int(T.Q8_0), 32))
    model.norm = nn.Linear(2, 2, bias=False)  # 16 float32 bytes
    model.lm_head = BlockLinear(table)
    nbytes, text = decode_bytes(model)
    assert nbytes == 4 * 34 + 10 * 34 + 16
    assert text == ("GGUF Q8_0 0.0 MB, float32 0.0 MB; tied head reads the embedding table")
