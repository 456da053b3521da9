"""Knowledge distillation on the CPU: a student trained on a teacher's logits.

The student keeps N of the teacher's layers, spread evenly (the first and last always),
initialised from the teacher's weights. Training minimises the KL divergence between
the teacher's and the student's next-token distributions softened by a temperature T
(scaled by T^2, as Hinton et al. do), on random windows of a text corpus. The token
embedding (tied to the output head) stays frozen: it is a third of the parameters and
training it on a small corpus mostly overfits.

Progress shows on a tqdm bar. Every `checkpoint_every` steps the student, the optimizer
and the step go to `checkpoint.pt` (written to a temporary file, then renamed); a run
started again with the same settings resumes from it, and batches are drawn from the
step number, so a resumed run sees the batches an uninterrupted one would have.

The same loop recovers a pruned model (`recover`): the base model is the teacher and
pruned weights are re-zeroed after every step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from tokenmill.files import write_atomically
from tokenmill.model.models.llama import LlamaForCausalLM
from tokenmill.optimize.forward import forward_logits
from tokenmill.optimize.prune import rebuild

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class TrainSettings:
    """Options of a distillation or recovery run."""

    steps: int
    seq_len: int = 128
    batch_size: int = 4
    lr: float = 1e-4
    temperature: float = 2.0
    checkpoint_every: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.seq_len < 8 or self.batch_size < 1:
            raise ValueError("--steps >= 0, --seq-len >= 8 and --batch-size >= 1 required")
        if self.lr <= 0 or self.temperature <= 0 or self.checkpoint_every < 1:
            raise ValueError("--lr, --temperature and --checkpoint-every must be positive")

    def resumable_with(self, other: TrainSettings) -> bool:
        """A checkpoint of `other` may continue under these settings (only `steps` and
        `checkpoint_every` may differ)."""
        mine = {**asdict(self), "steps": 0, "checkpoint_every": 0}
        return mine == {**asdict(other), "steps": 0, "checkpoint_every": 0}


@dataclass
class TrainLog:
    """What a run did: per-step losses (all steps, resumed ones included)."""

    losses: list[float] = field(default_factory=list)
    resumed_from: int = 0
    tokens_per_step: int = 0

    def summary(self) -> dict:
        first = self.losses[: max(1, len(self.losses) // 10)]
        last = self.losses[-max(1, len(self.losses) // 10) :]
        return {
            "steps": len(self.losses),
            "resumed_from_step": self.resumed_from,
            "tokens_seen": len(self.losses) * self.tokens_per_step,
            "kl_loss_first_10pct": sum(first) / len(first) if self.losses else None,
            "kl_loss_last_10pct": sum(last) / len(last) if self.losses else None,
        }


def evenly_spaced(total: int, keep: int) -> list[int]:
    """`keep` layer indices out of `total`, spread evenly, first and last included."""
    if not 1 <= keep <= total:
        raise ValueError(f"--layers must be between 1 and {total}, got {keep}")
    if keep == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def student_from_teacher(teacher: LlamaForCausalLM, layers: list[int]) -> LlamaForCausalLM:
    """A new model with the teacher's embedding, final norm and head and a copy of the
    listed layers. The teacher is not modified."""
    arch = teacher.arch
    arch_s = dataclasses.replace(
        arch,
        num_layers=len(layers),
        layer_num_heads=tuple(arch.heads_of(i) for i in layers) if arch.layer_num_heads else (),
        layer_intermediate_sizes=(
            tuple(arch.intermediate_size_of(i) for i in layers)
            if arch.layer_intermediate_sizes
            else ()
        ),
    )
    state = {}
    for name, t in teacher.state_dict().items():
        if name.startswith("layers."):
            _, idx, rest = name.split(".", 2)
            if int(idx) in layers:
                state[f"layers.{layers.index(int(idx))}.{rest}"] = t.clone()
        else:
            state[name] = t.clone()
    return rebuild(teacher, arch_s, state)


class Corpus:
    """Token ids of a text corpus, sampled as random windows."""

    def __init__(self, ids: torch.Tensor) -> None:
        self.ids = ids

    def batch(self, step: int, seed: int, batch_size: int, seq_len: int) -> list[torch.Tensor]:
        """The windows of `step`: the same for the same (step, seed), whatever ran
        before."""
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        starts = torch.randint(0, len(self.ids) - seq_len, (batch_size,), generator=gen)
        return [self.ids[s : s + seq_len] for s in starts.tolist()]


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T), averaged over tokens. Both (tokens, vocab)."""
    log_s = F.log_softmax(student / temperature, dim=-1)
    log_t = F.log_softmax(teacher / temperature, dim=-1)
    kl = F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")
    return kl * temperature**2


def _trainable(model: LlamaForCausalLM) -> list[torch.nn.Parameter]:
    params = []
    for name, p in model.named_parameters():
        train = not name.startswith(("embed_tokens", "lm_head"))
        p.requires_grad_(train)
        if train:
            params.append(p)
    return params


def train(
    student: LlamaForCausalLM,
    teacher: LlamaForCausalLM,
    corpus: Corpus,
    settings: TrainSettings,
    checkpoint_dir: Path | None,
    after_step: Callable[[LlamaForCausalLM], None] | None = None,
    desc: str = "distill",
    progress: bool = True,
) -> TrainLog:
    """Trains `student` in place toward `teacher` for settings.steps steps (resuming
    from checkpoint_dir's checkpoint when one with matching settings is there).
    after_step(student) runs after every optimizer step (e.g. to re-apply masks).
    Leaves the student with requires_grad off and in eval mode."""
    params = _trainable(student)
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    log = TrainLog(tokens_per_step=settings.batch_size * settings.seq_len)
    start = 0
    ckpt = checkpoint_dir / CHECKPOINT if checkpoint_dir is not None else None
    if ckpt is not None and ckpt.exists():
        saved = torch.load(ckpt, weights_only=False)
        if not settings.resumable_with(TrainSettings(**saved["settings"])):
            raise ValueError(
                f"{ckpt} was written with other settings ({saved['settings']}); delete it "
                "or run with the same settings to resume"
            )
        student.load_state_dict(saved["student"], strict=True)
        opt.load_state_dict(saved["optimizer"])
        start, log.losses = saved["step"], saved["losses"]
        log.resumed_from = start
    student.train()
    bar = tqdm(
        range(start, settings.steps),
        initial=start,
        total=settings.steps,
        desc=desc,
        disable=not progress,
        unit="step",
    )
    for step in bar:
        batch = corpus.batch(step, settings.seed, settings.batch_size, settings.seq_len)
        with torch.no_grad():
            target = forward_logits(teacher, batch)
        loss = kd_loss(forward_logits(student, batch), target, settings.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if after_step is not None:
            after_step(student)
        log.losses.append(float(loss.detach()))
        bar.set_postfix(kl=f"{log.losses[-1]:.4f}")
        done = step + 1
        if ckpt is not None and (done % settings.checkpoint_every == 0 or done == settings.steps):
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            state = {
                "step": done,
                "settings": asdict(settings),
                "losses": log.losses,
                "student": student.state_dict(),
                "optimizer": opt.state_dict(),
            }
            write_atomically(ckpt, lambda out, state=state: torch.save(state, out))
    student.requires_grad_(False).eval()
    return log
