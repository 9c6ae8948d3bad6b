"""Healing stages as footprints and FLOPs (recipes of ``frankenllama.healing.RECIPES``).

Trainable state: LoRA adapters (peft keeps them in float32) cost 16 bytes per parameter (weight,
gradient, two AdamW moments); full or partial fine-tuning adds a gradient and two AdamW moments in
the weights' dtype (``torch.optim.AdamW`` keeps its state in the parameter's dtype; no fp32 master
copy, as ``frankenllama.healing.trainer`` trains in the loaded dtype). Backward FLOPs: 2 × forward
for trained weights, 1 × for frozen weights on the gradient path (``frankenllama.plan.shapes``);
``partial`` assumes the first trained block sits mid-depth (nothing before it needs a backward pass).
"""

from __future__ import annotations

import dataclasses

from frankenllama.healing import UnknownRecipeError, parse_recipe
from frankenllama.plan.stages import (Footprint, Planner, Settings, StageEstimate, infer_token_bytes,
                                      logits_bytes, lora_params_per_block, saved_token_bytes)

TARGET_BYTES = 12  # per cached teacher target: a float32 log-probability and an int64 token id

ADAPTERS = {"kd-lora": "lora", "lora": "lora", "kd-full": "full", "partial": "partial", "linear-patch": "none"}
DISTILLS = {"kd-lora", "kd-full", "linear-patch"}


def _student(p: Planner, s: Settings, teacher_layers: tuple[int, ...], host: float) -> tuple[Footprint, float, float]:
    """Footprint, forward and backward FLOPs of the student's training steps (the teacher's weights, if
    co-located, are held too and its forward is added by the caller)."""
    m, b, L = p.shape, p.bytes, p.shape.num_layers
    S, T, bt = L - s.removed(L), s.heal_block_len, s.heal_batch * s.heal_block_len
    adapter = ADAPTERS[s.recipe]
    fwd = m.forward_flops(T, S)
    state = 3 * b  # gradient + two AdamW moments in the weights' dtype
    if adapter == "lora":
        lora = lora_params_per_block(m, s.lora_rank)
        trainable = {"per_layer": 16.0 * lora}
        grad_path, bwd = S, fwd + 4 * lora * S  # frozen path 1x, adapters 2x of their 2·params forward
        fwd += 2 * lora * S
    elif adapter == "full":
        trainable = {"per_layer": state * m.block_params, "first": state * m.embed_params,
                     "last": state * m.head_params}
        grad_path, bwd = S, 2 * fwd
    else:  # partial: two blocks by the cut + final norm; the gradient path starts mid-depth
        trainable = {"per_layer": state * m.block_params * 2 / S}
        grad_path = S / 2
        bwd = (S / 2) * m.block_flops(T) + m.head_flops() + 2 * m.block_flops(T)
    fp = Footprint((S, *teacher_layers), per_layer=bt * saved_token_bytes(m, b) * grad_path / S,
                   each=bt * infer_token_bytes(m, b), last=bt * logits_bytes(m, b, train=True), host=host,
                   trainable=trainable)
    return fp, fwd * s.heal_tokens, bwd * s.heal_tokens


def teacher_targets(p: Planner, s: Settings) -> StageEstimate:
    """The unpruned teacher once over the healing tokens, keeping its top-k log-probabilities
    (``frankenllama.healing.teacher``): ``N·(L·f_blk + f_head)``, host ``N·k·12`` bytes."""
    m, b, L = p.shape, p.bytes, p.shape.num_layers
    bt = s.heal_batch * s.heal_block_len
    fp = Footprint((L,), each=bt * infer_token_bytes(m, b), last=bt * logits_bytes(m, b),
                   host=s.heal_tokens * s.kd_top_k * TARGET_BYTES)
    return p.row("teacher top-k pass", f"top-{s.kd_top_k} of {s.heal_tokens:,} tok", fp,
                 s.heal_tokens * m.forward_flops(s.heal_block_len))


def heal(p: Planner, s: Settings, colocated: bool) -> StageEstimate:
    """A trained recipe's steps over ``heal_tokens``; with ``colocated`` the teacher's weights are held and it
    runs forward in every step (full-vocabulary KL, its logits beside the student's); otherwise the
    student reads the cached top-k targets."""
    m, b, L = p.shape, p.bytes, p.shape.num_layers
    bt = s.heal_batch * s.heal_block_len
    host = 0.0 if colocated or s.recipe not in DISTILLS else s.heal_tokens * s.kd_top_k * TARGET_BYTES
    fp, fwd, bwd = _student(p, s, (L,) if colocated else (), host)
    if colocated:
        fp.last += bt * logits_bytes(m, b)
        fwd += s.heal_tokens * m.forward_flops(s.heal_block_len)
    where = "teacher co-located" if colocated else ("cached teacher targets" if s.recipe in DISTILLS else "no teacher")
    return p.row(f"heal {s.recipe}", f"{where}, {s.heal_tokens:,} tok, B={s.heal_batch}", fp, fwd, bwd,
                 alternative=colocated)


def linear_patch(p: Planner, s: Settings) -> StageEstimate:
    """ReplaceMe's least-squares patch (arXiv:2505.02819): teacher and student forward over the patch
    tokens (``patch_tokens``, else the healing tokens), float64 normal equations ``XᵀX``, ``XᵀY``
    (2·H² each) accumulated: ``N·((L + S)·f_blk + 4H²)``. An upper bound: the fit reads the streams
    only up to the removed run (on SmolLM2 at 20 %, about half the estimate, README)."""
    m, b, L = p.shape, p.bytes, p.shape.num_layers
    S, bt = L - s.removed(L), s.heal_batch * s.heal_block_len
    fp = Footprint((S, L), each=bt * infer_token_bytes(m, b), first=2 * m.hidden**2 * 8)
    tokens = s.heal_tokens if s.patch_tokens is None else s.patch_tokens
    flops = tokens * ((L + S) * m.block_flops(s.heal_block_len) + 4 * m.hidden**2)
    return p.row("linear patch", f"fit on {tokens:,} tok (teacher + student)", fp, flops, upper_bound=True)


def recipe_steps(recipe: str) -> list[str]:
    """The steps of ``recipe``, a plannable recipe or a composition that ``frankenllama.healing.parse_recipe``
    accepts (``linear-patch+kd-lora``); ``ValueError`` naming the problem otherwise."""
    unknown = [name for name in recipe.split("+") if name.strip() not in ADAPTERS]
    if unknown:
        raise ValueError(f"cannot plan healing recipe {unknown[0]!r}: plannable recipes are {sorted(ADAPTERS)}, or "
                         "a composition of them joined by '+' (compress's default: linear-patch+kd-lora)")
    try:
        return [step.name for step in parse_recipe(recipe)]  # the composition rules compress heals by
    except UnknownRecipeError as err:
        raise ValueError(err.args[0]) from None


def healing_rows(p: Planner, s: Settings) -> list[StageEstimate]:
    """The healing rows of recipe ``s.recipe``: for a distilling recipe, the cached-targets route (teacher
    pass + steps) and the co-located teacher; otherwise the steps alone. A composition (``a+b``) gets each
    part's rows in order (its steps run one after the other)."""
    steps = recipe_steps(s.recipe)
    if len(steps) > 1:
        return [row for step in steps for row in healing_rows(p, dataclasses.replace(s, recipe=step))]
    if s.recipe == "linear-patch":
        return [linear_patch(p, s)]
    if s.recipe in DISTILLS:
        return [teacher_targets(p, s), heal(p, s, colocated=False), heal(p, s, colocated=True)]
    return [heal(p, s, colocated=False)]
