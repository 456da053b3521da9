"""Pruning plans, sparsity masks and the distillation loop on tiny models."""

import torch

from tests.optimize.conftest import tiny_model
from tokenmill.optimize.distill import (
    CHECKPOINT,
    Corpus,
    TrainSettings,
    evenly_spaced,
    kd_loss,
    student_from_teacher,
    train,
)
from tokenmill.optimize.forward import forward_logits
from tokenmill.optimize.prune import apply_plan, importance, plan_channels, plan_heads
from tokenmill.optimize.sparsity import magnitude_mask, sparsify, sparsity, two_four_mask

IDS = [torch.tensor([5, 17, 42, 9, 100, 3, 77, 8, 12, 250])]
WINDOWS = [
    torch.randint(3, 300, (24,), generator=torch.Generator().manual_seed(i)) for i in range(3)
]


def test_heads_with_no_output_are_removed_first_and_change_nothing():
    model = tiny_model()
    dead = {0: [1, 4], 1: [0, 3], 2: [2, 5]}  # one head per kv group (group = 3)
    with torch.no_grad():
        for layer, heads in dead.items():
            o = model.layers[layer].self_attn.o_proj.weight
            for h in heads:
                o[:, h * 16 : (h + 1) * 16] = 0
    scores = importance(model, WINDOWS, "heads")
    keep = plan_heads(scores, num_kv_heads=2, amount=6 / 18)
    assert keep == [[h for h in range(6) if h not in dead[i]] for i in range(3)]
    pruned = apply_plan(model, keep, None)
    assert pruned.arch.layer_num_heads == (4, 4, 4)
    assert torch.allclose(forward_logits(pruned, IDS), forward_logits(model, IDS), atol=1e-5)


def test_head_plan_keeps_groups_equal_and_one_head_each():
    scores = [torch.rand(6) for _ in range(3)]
    keep = plan_heads(scores, num_kv_heads=2, amount=0.9)
    for heads in keep:
        assert len([h for h in heads if h < 3]) == len([h for h in heads if h >= 3]) >= 1


def test_channels_with_no_output_are_removed_and_change_nothing():
    model = tiny_model()
    with torch.no_grad():
        for layer in model.layers:
            layer.mlp.down_proj.weight[:, 32:96] = 0  # 64 of 128 channels contribute nothing
    keep = plan_channels(importance(model, WINDOWS, "channels"), amount=0.5)
    assert all(k == list(range(32)) + list(range(96, 128)) for k in keep)
    pruned = apply_plan(model, None, keep)
    assert pruned.arch.layer_intermediate_sizes == (64, 64, 64)
    assert torch.allclose(forward_logits(pruned, IDS), forward_logits(model, IDS), atol=1e-5)


def test_two_four_keeps_the_two_largest_of_every_four():
    w = torch.tensor([[0.1, -3.0, 2.0, 0.5, 1.0, 1.1, -1.2, 0.0]])
    assert two_four_mask(w).tolist() == [[False, True, True, False, False, True, True, False]]
    model = tiny_model()
    sparsify(model, "2:4", 0.5)
    w = model.layers[0].mlp.down_proj.weight.reshape(-1, 4)
    assert ((w != 0).sum(-1) == 2).all()
    assert abs(sparsity(model) - 0.5) < 1e-6


def test_magnitude_mask_removes_the_smallest_fraction():
    w = torch.arange(1.0, 101.0).reshape(10, 10)
    mask = magnitude_mask(w, 0.3)
    assert int(mask.sum()) == 70 and not mask.flatten()[:30].any()


def test_student_copies_evenly_spaced_teacher_layers():
    assert evenly_spaced(30, 15)[:3] == [0, 2, 4] and evenly_spaced(30, 15)[-1] == 29
    assert evenly_spaced(3, 2) == [0, 2]
    teacher = tiny_model()
    student = student_from_teacher(teacher, [0, 2])
    assert student.arch.num_layers == 2
    assert torch.equal(
        student.layers[1].mlp.down_proj.weight, teacher.layers[2].mlp.down_proj.weight
    )


def test_distillation_lowers_the_loss_and_resumes_exactly(tmp_path):
    teacher = tiny_model(seed=0)
    corpus = Corpus(torch.randint(3, 300, (2000,), generator=torch.Generator().manual_seed(0)))
    settings = TrainSettings(steps=8, seq_len=16, batch_size=4, lr=1e-3, checkpoint_every=4)

    whole = student_from_teacher(teacher, [0, 2])
    probe = corpus.batch(10_000, seed=1, batch_size=4, seq_len=16)  # never a training batch

    def probe_loss() -> float:
        with torch.no_grad():
            target = forward_logits(teacher, probe)
            return float(kd_loss(forward_logits(whole, probe), target, settings.temperature))

    before = probe_loss()
    log = train(whole, teacher, corpus, settings, tmp_path / "a", progress=False)
    assert probe_loss() < 0.97 * before  # measured: 0.500 -> 0.47 after 8 steps
    assert len(log.losses) == 8

    halves = student_from_teacher(teacher, [0, 2])
    first = TrainSettings(**{**settings.__dict__, "steps": 5})
    train(halves, teacher, corpus, first, tmp_path / "b", progress=False)
    assert (tmp_path / "b" / CHECKPOINT).exists()
    resumed = student_from_teacher(teacher, [0, 2])
    log2 = train(resumed, teacher, corpus, settings, tmp_path / "b", progress=False)
    assert log2.resumed_from == 5 and len(log2.losses) == 8
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
