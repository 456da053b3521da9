"""Top-p through the candidate shortcut must equal top-p through a full sort."""

import pytest
import torch

from tokenmill.engine import logits_processors as lp


@pytest.mark.parametrize("scale", [8.0, 1.0])  # peaked: shortcut taken; flat: full sort
def test_candidate_nucleus_equals_full_sort(scale, monkeypatch):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 5000, generator=g) * scale
    top_p = torch.tensor([0.9, 1.0, 0.5, 0.99, 1.0, 0.1])
    fast = logits.clone()
    lp.apply_top_k_top_p(fast, None, top_p)
    monkeypatch.setattr(lp, "_NUCLEUS_CANDIDATES", 1)
    slow = logits.clone()
    lp.apply_top_k_top_p(slow, None, top_p)
    assert torch.equal(fast, slow)
    # Rows with top_p == 1 are untouched; the others keep a nonempty strict subset.
    assert torch.equal(fast[1], logits[1]) and torch.equal(fast[4], logits[4])
    kept = (fast > float("-inf")).sum(dim=1)
    assert all(1 <= int(kept[i]) < 5000 for i in (0, 2, 3, 5))


def test_shortcut_used_when_nucleus_fits():
    logits = torch.full((2, 3000), -50.0)
    logits[:, :3] = torch.tensor([5.0, 4.0, 3.0])
    assert lp._nucleus_from_candidates(logits, torch.tensor([0.7, 1.0]))
    assert (logits[0] > float("-inf")).sum() == 2  # 0.66 + 0.24 covers 0.7
    assert (logits[1] > float("-inf")).sum() == 3000
