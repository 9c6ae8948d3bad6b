"""The healing training loop: one optimizer step per batch of token blocks, for any trained recipe.

``RecipeTrainer`` owns the trainable model (a ``peft`` LoRA wrapper, or the model with some or all
weights unfrozen), its AdamW optimizer and learning-rate schedule, and the loss:

* next-token cross-entropy ``CE``;
* with distillation, ``kd_weight · T² · KL(p_t^T ‖ p_s^T) + (1 − kd_weight) · CE`` where ``p^T`` is
  the softmax at temperature ``T`` of the teacher's / student's logits (Hinton et al. 2015,
  arXiv:1503.02531; the ``T²`` keeps gradient magnitudes comparable across temperatures); over the
  teacher's cached top-k tokens plus a tail bucket by default, over the whole vocabulary with the
  teacher run in the step when ``kd_top_k=0`` (``frankenllama.healing.teacher``);
* optionally ``+ hidden_weight · ‖h_s − h_t‖² / ‖h_t‖²`` at each cut: ``h_s`` the student's residual
  after the last block before the cut, ``h_t`` the teacher's after the last removed block, i.e. the
  residual the rest of the network expects (Gromov et al. 2024, arXiv:2403.17887).

The step is the unit the benchmark times and the loop in ``frankenllama.healing.loop`` repeats;
``state_dict``/``load_state_dict`` hold exactly what a bit-identical resume needs (trainable weights,
optimizer and scheduler state).

Data parallel. ``distribute(accelerator)`` prepares the trainable model and the optimizer with
accelerate's ``Accelerator`` (DDP under ``accelerate launch``): each process then steps on its slice
of the global batch and DDP averages the gradients. Every loss is a mean over positions and every
process has the same number of positions, so the averaged gradient is the one-process gradient of
the whole batch (up to float rounding) — except the hidden-state term, a ratio of means, which
becomes the mean of the per-process ratios.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from frankenllama.healing.recipes import HealConfig, Recipe
from frankenllama.healing.teacher import full_kl, sparse_kl
from frankenllama.models import decoder_layers
from frankenllama.surgery import lineage, removed_layers
from frankenllama.healing.patch import contiguous_runs


class LoraTargetError(ValueError):
    """LoRA target modules that the model does not have."""


class TeacherMismatchError(ValueError):
    """The teacher cannot supervise the student (different tokenizer or vocabulary)."""


def linear_module_names(model: nn.Module) -> set[str]:
    """Short names (last path component) of the linear layers inside the decoder blocks."""
    names = set()
    for block in decoder_layers(model):
        for name, module in block.named_modules():
            if isinstance(module, nn.Linear):
                names.add(name.rsplit(".", 1)[-1])
    return names


def check_lora_targets(model: nn.Module, targets: tuple[str, ...]) -> None:
    available = linear_module_names(model)
    missing = [t for t in targets if t not in available]
    if missing:
        raise LoraTargetError(
            f"LoRA target modules {missing} do not exist in this model's blocks; available linear modules: "
            f"{sorted(available)}"
        )


def check_teacher(student: PreTrainedModel, teacher: PreTrainedModel, student_tok=None, teacher_tok=None) -> None:
    """Refuse a teacher whose vocabulary (size or token ↔ id map) differs from the student's."""
    s_vocab, t_vocab = student.config.vocab_size, teacher.config.vocab_size
    s_rows = student.get_output_embeddings().weight.shape[0]
    t_rows = teacher.get_output_embeddings().weight.shape[0]
    if s_vocab != t_vocab or s_rows != t_rows:
        raise TeacherMismatchError(
            f"teacher vocabulary ({t_vocab} tokens, {t_rows} logits) differs from the student's ({s_vocab}, {s_rows}); "
            "distillation needs the same tokenizer: use the unpruned model the student was cut from"
        )
    if student_tok is not None and teacher_tok is not None and student_tok.get_vocab() != teacher_tok.get_vocab():
        raise TeacherMismatchError(
            "teacher and student tokenizers map tokens to different ids; distillation needs the same tokenizer"
        )


def cut_pairs(student: PreTrainedModel) -> list[tuple[int, int]]:
    """For each removed run: (student block before the cut, or −1 for the embeddings; teacher's last removed block)."""
    kept = lineage(student)["kept_layers"]
    return [(kept.index(run[0] - 1) if run[0] > 0 else -1, run[-1]) for run in contiguous_runs(removed_layers(student))]


def partial_layers(student: PreTrainedModel, scope: str, width: int) -> list[int]:
    """Student block ids trained by the partial recipe (see ``recipes`` module docstring)."""
    n = len(decoder_layers(student))
    if scope == "last":
        return list(range(max(0, n - width), n))
    kept = lineage(student)["kept_layers"]
    runs = contiguous_runs(removed_layers(student))
    if not runs:
        raise ValueError("partial_scope='cut' needs a pruned model (no removed layers recorded); use partial_scope='last'")
    chosen = set()
    for run in runs:
        before = [k for k in kept if k < run[0]][-width:]
        after = [k for k in kept if k > run[-1]][:width]
        chosen.update(kept.index(k) for k in before + after)
    return sorted(chosen)


def lr_factor(step: int, total: int, warmup: float, min_ratio: float) -> float:
    """Linear warm-up over ``warmup·total`` steps, then cosine decay from 1 to ``min_ratio``."""
    n_warm = int(round(warmup * total))
    if step < n_warm:
        return (step + 1) / n_warm
    progress = (step - n_warm) / max(1, total - n_warm)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class _Grab:
    """Forward hooks that keep the outputs of chosen modules (with their autograd graph)."""

    def __init__(self, modules: list[nn.Module]):
        self.out: list[torch.Tensor | None] = [None] * len(modules)
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(modules)]

    def _hook(self, i: int):
        def hook(module, args, output):
            self.out[i] = output[0] if isinstance(output, tuple) else output

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class RecipeTrainer:
    """One trained recipe on one model: build the trainable model, then ``step(ids)`` repeatedly.

    The model passed in is modified (adapters injected, weights updated); pass a copy to keep the
    original. Call ``finish()`` to get the plain healed model (LoRA merged) back.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        config: HealConfig,
        total_steps: int,
        teacher: PreTrainedModel | None = None,
    ):
        recipe: Recipe | None = config.trained_recipe
        if recipe is None:
            raise ValueError(f"recipe {config.recipe!r} has no trained step")
        self.config, self.recipe, self.total_steps = config, recipe, total_steps
        self.teacher = teacher
        if recipe.distill and teacher is None:
            raise ValueError(f"recipe {config.recipe!r} distils from the unpruned model: pass teacher=")
        self._embed_hook = None
        self.cuts = cut_pairs(model) if (recipe.distill and config.hidden_weight > 0) else []
        if recipe.distill and config.hidden_weight > 0 and not self.cuts:
            raise ValueError("hidden_weight > 0 needs a pruned student (a cut to match hidden states at)")
        self.model = self._prepare(model)
        self.model.train()
        self.forward: nn.Module = self.model  # what a step calls: the model, or its DDP wrapper (``distribute``)
        self.accelerator = None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=config.learning_rate, betas=(0.9, 0.95), eps=1e-8, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total_steps, config.warmup, config.min_lr_ratio)
        )

    def distribute(self, accelerator) -> None:
        """Train data-parallel under ``accelerator`` (an ``accelerate.Accelerator``): DDP over its processes.

        The model and optimizer go through ``accelerator.prepare``; ``self.model`` stays the plain
        (unwrapped) model that checkpoints, ``finish`` and the hooks read. FSDP is refused: its
        sharded weights and optimizer state would need sharded checkpoints, which this loop does
        not write (use DDP; see the README's "Bigger models").
        """
        from accelerate.utils import DistributedType

        if accelerator.distributed_type == DistributedType.FSDP:
            raise NotImplementedError("healing under FSDP is not supported (sharded checkpoints); launch with DDP")
        if self.config.batch_size % accelerator.num_processes:
            raise ValueError(f"batch_size {self.config.batch_size} must be a multiple of the {accelerator.num_processes} "
                             "processes (each takes an equal slice of the global batch)")  # fmt: skip
        self.accelerator = accelerator
        self.forward, self.optimizer = accelerator.prepare(self.model, self.optimizer)

    # ---------------------------------------------------------------- model preparation
    def _prepare(self, model: PreTrainedModel) -> nn.Module:
        cfg = self.config
        model.requires_grad_(False)
        if self.recipe.adapter == "lora":
            from peft import LoraConfig, get_peft_model

            check_lora_targets(model, cfg.lora_targets)
            lora = LoraConfig(
                r=cfg.lora_rank,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=list(cfg.lora_targets),
                bias="none",
            )
            return get_peft_model(model, lora)
        if self.recipe.adapter == "full":
            model.requires_grad_(True)
            return model
        if self.recipe.adapter == "partial":
            layers = decoder_layers(model)
            self.trained_layers = partial_layers(model, cfg.partial_scope, cfg.partial_width)
            for i in self.trained_layers:
                layers[i].requires_grad_(True)
            model.model.norm.requires_grad_(True)
            if cfg.partial_train_head:
                model.get_output_embeddings().requires_grad_(True)
                # With tied embeddings the head's matrix is also the input embedding; stop the gradient
                # at the embedding lookup so the frozen prefix still needs no backward pass.
                self._embed_hook = model.get_input_embeddings().register_forward_hook(lambda m, a, out: out.detach())
            return model
        raise ValueError(f"recipe {self.recipe.name!r} is not trainable")

    def base_model(self) -> PreTrainedModel:
        """The underlying transformers model (inside the peft wrapper for LoRA)."""
        return self.model.get_base_model() if self.recipe.adapter == "lora" else self.model

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    # ---------------------------------------------------------------- one step
    def loss(self, ids: torch.Tensor, targets: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The recipe's loss on a ``(B, T)`` batch and its parts (floats, for the log).

        ``targets``: the batch's cached teacher targets ``(indices, logp)`` (``TeacherTargets.rows``),
        required by distillation with ``kd_top_k > 0``.
        """
        cfg = self.config
        s_layers = decoder_layers(self.base_model())
        grab_s = grab_t = None
        if self.cuts:
            s_mods = [s_layers[p] if p >= 0 else self.base_model().get_input_embeddings() for p, _ in self.cuts]
            grab_s = _Grab(s_mods)
            grab_t = _Grab([decoder_layers(self.teacher)[t] for _, t in self.cuts])
        try:
            # the head runs on the positions that predict a token only (no logits of the last one to slice
            # off, whose backward would fill a (B, T, V) gradient with zeros)
            keep = torch.arange(ids.shape[1] - 1, device=ids.device)
            logits = self.forward(input_ids=ids, use_cache=False, logits_to_keep=keep).logits.float()  # (B, T-1, V)
            parts: dict[str, float] = {}
            next_ids = ids[:, 1:, None]  # (B, T-1, 1)
            total = logits.new_zeros(())
            temp = cfg.kd_temperature
            log_p = F.log_softmax(logits, dim=-1)  # one full-vocabulary pass for the CE and, at T = 1, the KL
            ce_w = 1.0 - cfg.kd_weight if self.recipe.distill else 1.0
            sparse = self.recipe.distill and bool(cfg.kd_top_k)
            if sparse:
                if targets is None:
                    raise ValueError("kd_top_k > 0: pass the batch's cached teacher targets (TeacherTargets.rows)")
                indices, t_logp = (t.to(logits.device) for t in targets)
            # The CE's target and, at T = 1, the teacher's top k read from log_p in one gather: its backward
            # scatters into one (B, T-1, V) gradient where nll_loss and a second gather would fill two and add them.
            shared = sparse and temp == 1.0
            picked = log_p.gather(-1, torch.cat([next_ids, indices], -1) if shared else next_ids) \
                if ce_w > 0 or shared else None  # (B, T-1, 1 [+ k])
            if ce_w > 0:
                ce = -picked[..., 0].mean()
                total = total + ce_w * ce
                parts["ce"] = float(ce.detach())
            if self.recipe.distill:
                log_p_temp = log_p if temp == 1.0 else F.log_softmax(logits / temp, dim=-1)
                if sparse:
                    kl = sparse_kl(log_p_temp, indices, t_logp, s_top=picked[..., 1:] if shared else None)
                else:
                    with torch.no_grad():
                        t_logits = self.teacher(input_ids=ids, use_cache=False).logits[:, :-1]  # (B, T-1, V)
                    kl = full_kl(log_p_temp, t_logits, temp)
                total = total + cfg.kd_weight * temp**2 * kl
                parts["kd"] = float(kl.detach())
                if self.cuts:
                    hid = sum(
                        ((hs - ht) ** 2).sum(-1).mean() / (ht**2).sum(-1).mean()
                        for hs, ht in zip(grab_s.out, grab_t.out, strict=True)
                    ) / len(self.cuts)
                    total = total + cfg.hidden_weight * hid
                    parts["hidden"] = float(hid.detach())
        finally:
            for g in (grab_s, grab_t):
                if g is not None:
                    g.remove()
        parts["loss"] = float(total.detach())
        return total, parts

    def step(self, ids: torch.Tensor, targets: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, float]:
        """One optimizer step on a ``(B, T)`` batch; returns the loss parts, lr and seconds taken."""
        t0 = time.perf_counter()
        lr = self.scheduler.get_last_lr()[0]
        loss, parts = self.loss(ids, targets)
        self.optimizer.zero_grad(set_to_none=True)
        if self.accelerator is None:
            loss.backward()
            if self.config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        else:  # gradients averaged over the processes before clipping: the same norm on every process
            self.accelerator.backward(loss)
            if self.config.grad_clip > 0:
                self.accelerator.clip_grad_norm_(self.params, self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        parts.update(lr=lr, seconds=time.perf_counter() - t0)
        return parts

    # ---------------------------------------------------------------- resume
    def state_dict(self) -> dict:
        return {
            "trainable": self.trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        named = dict(self.model.named_parameters())
        missing = set(state["trainable"]) ^ {n for n, p in named.items() if p.requires_grad}
        if missing:
            raise ValueError(f"checkpoint's trainable parameters do not match this run's: {sorted(missing)[:5]} …")
        with torch.no_grad():
            for name, value in state["trainable"].items():
                named[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    # ---------------------------------------------------------------- end
    def finish(self) -> PreTrainedModel:
        """The healed plain transformers model: LoRA merged, everything frozen, eval mode."""
        if self._embed_hook is not None:
            self._embed_hook.remove()
            self._embed_hook = None
        model = self.model.merge_and_unload() if self.recipe.adapter == "lora" else self.model
        if hasattr(model, "peft_config"):
            del model.peft_config
        model.requires_grad_(False)
        model.eval()
        return model
