"""Loading a model imports only what serving it needs: building the model on the meta
device must not pull in torch._dynamo (and sympy) through nn.Embedding's random init."""

from __future__ import annotations

import subprocess
import sys

import torch

from tokenmill.model.layers.embedding import embedding


def test_load_model_leaves_dynamo_unimported(smollm_file):
    code = (
        "import sys; from tokenmill.model.loader import load_model; "
        f"load_model({str(smollm_file)!r}); "
        "print('torch._dynamo' in sys.modules, 'sympy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr


def test_embedding_keeps_its_random_init_off_the_meta_device():
    torch.manual_seed(0)
    real = embedding(1000, 64)
    assert real.weight.device.type == "cpu" and real.weight.requires_grad
    assert 0.9 < real.weight.std().item() < 1.1  # nn.Embedding's N(0, 1)
    with torch.device("meta"):
        shell = embedding(1000, 64)
    assert shell.weight.is_meta and tuple(shell.weight.shape) == (1000, 64)
