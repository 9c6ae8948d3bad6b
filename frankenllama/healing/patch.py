"""A training-free linear patch for a removed run of blocks (ReplaceMe, Shopkhoev et al. 2025, arXiv:2505.02819).

Notation for a contiguous run of removed blocks ``i … j−1`` (original indices) and the last kept
block before it, ``p = i − 1``. Block ``p`` computes, on the residual stream ``x``::

    Y = x + Attn_p(norm(x))          # residual after the attention half     (tokens, d)
    M = MLP_p(norm(Y)) = z · W_downᵀ  # the MLP's output, z its hidden state   (tokens, d)
    out_p = Y + M

In the unpruned model the removed run then maps ``out_p`` to ``L`` = the residual after block
``j − 1``. After pruning, ``out_p`` feeds block ``j`` directly. ReplaceMe fits one matrix ``T``
(d × d) on calibration tokens::

    T* = argmin_T ‖ M T − (L − Y) ‖²_F   (+ λ‖T‖² with ridge λ)

and folds it into the down projection, ``W_down ← T*ᵀ W_down``, so block ``p`` now outputs
``Y + M T* ≈ L``: the architecture stays a vanilla transformers model with the same parameter count.

When a sub-block strategy has also removed block ``p``'s MLP (part-swap often takes the MLP next to a
removed run: it is cheap), the last write into the stream before the cut is the attention's output
projection. The same fit then reads ``M = Attn_p(norm(x))`` and ``Y = x`` (the block's input) and
folds ``T*`` into ``o_proj`` (``W_o ← T*ᵀ W_o``): block ``p`` outputs ``x + A T* ≈ L``.

Why the MLP output and not the residual entering the cut? A map on the residual stream
``x ↦ x T`` cannot be folded into any existing weight — the skip connection carries ``Y`` through
unchanged — whereas the MLP output enters the stream only through ``W_down``, so a linear map on it
is exactly foldable. Consequently the patch is *exact* whenever the removed run's net update
``L − Y`` is a linear function of ``M`` on the data (e.g. a removed block that adds a linear
function of the previous MLP's output); the tests build such a block and check exactness. The
paper's ablations use the same MLP-output formulation.

Several runs are patched in order; each later run is fitted on the student as already patched
(its inputs ``Y, M``) against the teacher's residual (``L``), so upstream approximation error is
corrected rather than compounded; the teacher's targets of every run come from one teacher pass over
the calibration blocks (``_all_targets``). A cut that starts at block 0 has nothing before it to fold
a patch into and is refused.

The least-squares problem is accumulated as normal equations in float64 batch by batch (memory is
``O(d²)`` whatever the number of tokens) and solved with a pseudo-inverse, which returns the
minimum-norm solution when ``MᵀM`` is singular.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from frankenllama.models import decoder_layers, model_device
from frankenllama.sublayer import removed_sublayers
from frankenllama.surgery import lineage, removed_layers


class PatchError(ValueError):
    """The patch cannot be applied as asked (layers not removed, cut at block 0, wrong teacher)."""


@dataclass(frozen=True)
class PatchFit:
    """One fitted and folded patch."""

    removed: tuple[int, ...]  # original ids of the removed run it stands in for
    student_layer: int  # index in the pruned model of the block whose down_proj was changed
    rel_error: float  # ‖M T − (L − Y)‖² / ‖L − Y‖² on the calibration tokens
    rel_error_identity: float  # the same for T = I (plain removal), for comparison
    tokens: int  # calibration tokens used


class _Stop(Exception):
    """Raised by a hook once every needed activation of a forward pass has been captured."""


def contiguous_runs(layers: list[int]) -> list[tuple[int, ...]]:
    """Split sorted layer ids into maximal runs of consecutive ids: [3,4,7] → [(3,4),(7,)]."""
    runs: list[list[int]] = []
    for i in sorted(layers):
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return [tuple(r) for r in runs]


def patchable_layers(student: PreTrainedModel) -> tuple[int, ...]:
    """Original ids of the removed runs the patch can stand in for (``HealConfig.patch_layers``).

    A run is patched through the last projection that writes into the stream before it: the down
    projection of the block before it, or that block's attention output projection where a sub-block
    strategy removed its MLP. So every run but one that starts at block 0 can be patched.
    """
    runs = [r for r in contiguous_runs(removed_layers(student)) if r[0] > 0]
    return tuple(layer for run in runs for layer in run)


def patch_runs(student: PreTrainedModel, layers: tuple[int, ...] | None = None) -> list[tuple[int, ...]]:
    """The removed runs to patch: all of ``student``'s, or those that ``layers`` names (whole runs only)."""
    removed = removed_layers(student)
    runs = contiguous_runs(removed)
    if layers is None:
        if not runs:
            raise PatchError("the model has no removed layers (its lineage records none): nothing to patch")
        return runs
    not_removed = sorted(set(layers) - set(removed))
    if not_removed:
        raise PatchError(
            f"patch asked for layers {not_removed}, which were not removed from this model "
            f"(removed layers: {removed}); patch_layers must name removed layers"
        )
    chosen = [r for r in runs if set(r) & set(layers)]
    partial = [r for r in chosen if not set(r) <= set(layers)]
    if partial:
        raise PatchError(
            f"patch_layers {sorted(layers)} splits the removed run {list(partial[0])}: one linear map stands in "
            f"for a whole contiguous run; name every layer of the runs to patch (runs: {[list(r) for r in runs]})"
        )
    return chosen


def check_teacher_lineage(student: PreTrainedModel, teacher: PreTrainedModel) -> None:
    """The teacher must be the unpruned model the student was cut from (same depth and width)."""
    origin = lineage(student)["original_num_hidden_layers"]
    if removed_layers(teacher) or len(decoder_layers(teacher)) != origin:
        raise PatchError(
            f"the teacher has {len(decoder_layers(teacher))} blocks (removed: {removed_layers(teacher)}); "
            f"it must be the unpruned model with {origin} blocks that the student was cut from"
        )
    if teacher.config.hidden_size != student.config.hidden_size:
        raise PatchError("teacher and student differ in hidden size: the teacher is not the student's origin")


def _capture(model: nn.Module, ids: torch.Tensor, wants: dict[str, tuple[nn.Module, str]]) -> dict[str, torch.Tensor]:
    """Run ``model``'s trunk on ``ids`` and return the tensors named in ``wants`` (stops early).

    ``wants`` maps a key to ``(module, kind)`` with kind ``"in"`` (first positional input) or
    ``"out"`` (output).
    """
    got: dict[str, torch.Tensor] = {}
    handles = []

    def make(key: str, kind: str):
        def hook(module, args, kwargs_or_out, *rest):
            if kind == "in":
                value = args[0] if args else kwargs_or_out["hidden_states"]
            else:
                out = rest[0] if rest else kwargs_or_out
                value = out[0] if isinstance(out, tuple) else out
            got[key] = value.detach()
            if len(got) == len(wants):
                raise _Stop

        return hook

    for key, (module, kind) in wants.items():
        if kind == "in":
            handles.append(module.register_forward_pre_hook(make(key, kind), with_kwargs=True))
        else:
            handles.append(module.register_forward_hook(make(key, kind)))
    try:
        model.model(input_ids=ids, use_cache=False)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = set(wants) - set(got)
    if missing:
        raise RuntimeError(f"forward pass did not reach {sorted(missing)}")
    return got


@torch.no_grad()
def _same_prefix(student: PreTrainedModel, teacher: PreTrainedModel, p: int) -> bool:
    """Whether the student's embeddings and blocks 0 … p are exactly the teacher's blocks 0 … p."""
    if lineage(student)["kept_layers"][: p + 1] != list(range(p + 1)):
        return False
    pairs = [(student.get_input_embeddings(), teacher.get_input_embeddings())]
    pairs += [(decoder_layers(student)[k], decoder_layers(teacher)[k]) for k in range(p + 1)]
    for a, b in pairs:
        sa, sb = a.state_dict(), b.state_dict()
        if list(sa) != list(sb):  # a sub-block removed from the student
            return False
        for ta, tb in zip(sa.values(), sb.values(), strict=True):
            if ta.shape != tb.shape or ta.device != tb.device or not torch.equal(ta, tb):
                return False
    return True


TARGETS_IN_MEMORY = 2**30  # bytes of teacher targets kept for several runs; beyond it, one teacher pass per run


@torch.no_grad()
def _all_targets(teacher: PreTrainedModel, batches: list[torch.Tensor], runs: list[tuple[int, ...]],
                 device: torch.device) -> list[list[torch.Tensor]] | None:
    """The teacher's residual after each run's last block (``L``), per run and batch, from one teacher pass
    per batch instead of one per run (the teacher does not change while the student is patched).

    ``None`` when they would take more than ``TARGETS_IN_MEMORY`` bytes: the caller then runs the
    teacher once per run, as it would for a single run.
    """
    tokens = sum(ids.numel() for ids in batches)
    if tokens * teacher.config.hidden_size * 4 * len(runs) > TARGETS_IN_MEMORY:
        return None
    t_layers = decoder_layers(teacher)
    per_run: list[list[torch.Tensor]] = [[] for _ in runs]
    for ids in batches:
        got = _capture(teacher, ids.to(device), {str(i): (t_layers[run[-1]], "out") for i, run in enumerate(runs)})
        for i in range(len(runs)):
            per_run[i].append(got[str(i)])
    return per_run


@torch.no_grad()
def fold_into_projection(down: nn.Linear, transform: torch.Tensor) -> None:
    """Make the output ``M`` of ``down`` (a projection into the residual stream: an MLP's ``down_proj``
    or an attention's ``o_proj``) become ``M T``: ``W ← Tᵀ W`` (and ``b ← b T``)."""
    w = down.weight  # (d, m)
    t = transform.to(torch.float64)  # (d, d)
    down.weight.copy_((t.T.to(w.device) @ w.to(torch.float64)).to(w.dtype))
    if down.bias is not None:
        down.bias.copy_((down.bias.to(torch.float64) @ t.to(w.device)).to(down.bias.dtype))


@torch.no_grad()
def linear_patch(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    calib_blocks: torch.Tensor,
    layers: tuple[int, ...] | None = None,
    ridge: float = 0.0,
    batch_size: int = 4,
) -> list[PatchFit]:
    """Fit and fold a ReplaceMe patch for each removed run of ``student`` (modified in place).

    Args:
        student: the pruned model (its ``config.frankenllama`` lineage names the removed layers).
        teacher: the unpruned model it was cut from; supplies the targets ``L``.
        calib_blocks: ``(N, T)`` calibration token blocks.
        layers: original ids of the removed layers to patch (whole runs); ``None`` → every run.
        ridge: λ relative to the mean eigenvalue of ``MᵀM`` (0 → plain least squares).
    """
    check_teacher_lineage(student, teacher)
    runs = patch_runs(student, layers)
    kept = lineage(student)["kept_layers"]
    s_layers, t_layers = decoder_layers(student), decoder_layers(teacher)
    s_dev, t_dev = model_device(student), model_device(teacher)
    batches = [calib_blocks[start : start + batch_size] for start in range(0, len(calib_blocks), batch_size)]
    targets = _all_targets(teacher, batches, runs, t_dev) if len(runs) > 1 else None
    fits = []
    for r, run in enumerate(runs):
        if run[0] == 0:
            raise PatchError(
                f"the removed run {list(run)} starts at block 0: there is no MLP before the cut to fold a patch into"
            )
        p = kept.index(run[0] - 1)
        block = s_layers[p]
        d = student.config.hidden_size
        # the last projection into the stream before the cut: the MLP's, or the attention's where the MLP was removed
        via_attention = p in removed_sublayers(student)["mlp"]
        source, projection = (block.self_attn, block.self_attn.o_proj) if via_attention else (block.mlp, block.mlp.down_proj)
        before = (block, "in") if via_attention else (block.post_attention_layernorm, "in")
        if ridge == 0 and len(calib_blocks) * calib_blocks.shape[1] < d:
            raise PatchError(
                f"{calib_blocks.numel()} calibration tokens are fewer than the hidden size {d}: the least-squares "
                "fit is underdetermined and would overfit; give more calibration tokens or a ridge > 0"
            )
        # Before any patch is folded the student's prefix is the teacher's own: read Y and M from the
        # teacher's pass too and skip the student's.
        shared = not via_attention and _same_prefix(student, teacher, p)  # the teacher's pass reads the MLP's hook points
        t_block = t_layers[run[0] - 1]
        gram = torch.zeros(d, d, dtype=torch.float64)  # MᵀM
        cross = torch.zeros(d, d, dtype=torch.float64)  # Mᵀ(L − Y)
        err_id = target_sq = 0.0
        tokens = 0
        for b, ids in enumerate(batches):
            if shared:
                got = _capture(teacher, ids.to(t_dev), {
                    "Y": (t_block.post_attention_layernorm, "in"), "M": (t_block.mlp, "out"), "L": (t_layers[run[-1]], "out")
                })  # fmt: skip
                target = got["L"]
            else:
                target = targets[r][b] if targets is not None else _capture(
                    teacher, ids.to(t_dev), {"L": (t_layers[run[-1]], "out")})["L"]  # fmt: skip
                got = _capture(student, ids.to(s_dev), {"Y": before, "M": (source, "out")})
            m = got["M"].reshape(-1, d).double().cpu()  # (n, d)
            delta = (target.to(s_dev) - got["Y"]).reshape(-1, d).double().cpu()  # (n, d)
            gram += m.T @ m
            cross += m.T @ delta
            target_sq += float((delta**2).sum())
            err_id += float(((m - delta) ** 2).sum())
            tokens += m.shape[0]
        lam = ridge * float(torch.trace(gram)) / d
        transform = torch.linalg.pinv(gram + lam * torch.eye(d, dtype=torch.float64), hermitian=True) @ cross
        # ‖MT − Δ‖² = tr(Tᵀ MᵀM T) − 2 tr(Tᵀ MᵀΔ) + ‖Δ‖², from the accumulated statistics
        resid = float(torch.trace(transform.T @ gram @ transform) - 2 * torch.trace(transform.T @ cross)) + target_sq
        fold_into_projection(projection, transform)
        fits.append(PatchFit(run, p, max(resid, 0.0) / target_sq, err_id / target_sq, tokens))
    return fits
