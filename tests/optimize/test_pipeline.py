"""Every command through the CLI on a tiny random model: the pipeline, the report and
the servable output, in seconds. (tests/optimize/slow runs them on the real model.)"""

import json

import pytest

from tests.optimize.conftest import tiny_model
from tokenmill import LLM, SamplingParams
from tokenmill.cli.main import main
from tokenmill.optimize.checkpoint import float_state, write_model_dir

KEYS = {
    "perplexity",
    "accuracy",
    "agreement",
    "size_bytes",
    "memory_bytes",
    "tok_s_batch1",
    "tok_s_batch32",
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny_tokenizer):
    path = tmp_path_factory.mktemp("tiny")
    model = tiny_model()
    write_model_dir(path, model.arch, tiny_tokenizer, float_state(model))
    return path


@pytest.fixture(scope="module")
def base_report(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("q8")
    assert (
        main(
            [
                "optimize",
                "quantize",
                str(tiny_dir),
                "--method",
                "gguf-q8_0",
                "-o",
                str(out),
                "--eval",
                "quick",
            ]
        )
        == 0
    )
    return out / "report.json"


def run(tiny_dir, out, base_report, *args) -> dict:
    assert (
        main(
            [
                "optimize",
                *args,
                str(tiny_dir),
                "-o",
                str(out),
                "--eval",
                "quick",
                "--base-report",
                str(base_report),
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["base"].keys() == report["result"].keys() == KEYS
    assert (out / "report.md").read_text().startswith("# tokenmill optimize")
    llm = LLM(str(out), num_kv_blocks=64, max_model_len=128)
    reply = llm.generate(
        [[5, 6, 7]], SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)
    )
    assert len(reply[0].outputs[0].token_ids) == 4
    return report


def test_gguf_q8_0_base_run(base_report):
    report = json.loads(base_report.read_text())
    assert report["base"]["agreement"] == 1.0
    assert report["result"]["perplexity"] == pytest.approx(report["base"]["perplexity"], rel=0.02)


@pytest.mark.parametrize(
    "args",
    [
        ("quantize", "--method", "int8", "--calib-tokens", "256"),
        ("quantize", "--method", "int4", "--group-size", "32", "--calib-tokens", "256"),
        ("quantize", "--method", "gguf-q4_k"),
        ("prune", "--method", "heads", "--amount", "0.3", "--calib-tokens", "256"),
        (
            "prune",
            "--method",
            "channels",
            "--amount",
            "0.5",
            "--calib-tokens",
            "256",
            "--recover-steps",
            "2",
            "--seq-len",
            "16",
            "--batch-size",
            "2",
            "--no-progress",
        ),
        ("prune", "--method", "magnitude", "--amount", "0.3"),
        (
            "distill",
            "--layers",
            "2",
            "--steps",
            "2",
            "--seq-len",
            "16",
            "--batch-size",
            "2",
            "--no-progress",
        ),
        ("export", "onnx"),
    ],
    ids=lambda a: "-".join(a[:3]),
)
def test_command_end_to_end(tiny_dir, tmp_path, base_report, args):
    args = list(args)
    if args[0] == "export":
        args = ["export", "onnx"]
    report = run(tiny_dir, tmp_path, base_report, *args)
    if args[0] == "export":
        assert report["result"]["agreement"] == 1.0
    if args[:3] == ["quantize", "--method", "int8"]:
        assert report["details"]["layer fusion (what the engine fuses when serving this output)"]
