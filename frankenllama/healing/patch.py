"""A training-free linear patch for a removed run of blocks (ReplaceMe, Shopkhoev et al. 2025, arXiv:2505.02819).

Notation for a contiguous run of removed blocks ``i … j−1`` (original indices) and the last kept
block before it, ``p = i − 1``. Block ``p`` computes, on the residual stream ``x``::

    Y = x + Attn_p(norm(x))          # residual after the attention half     (tokens, d)
    M = MLP_p(norm(Y)) = z · W_downᵀ  # the MLP's output, z its hidden state   (tokens, d)
    out_p = Y + M

In the unpruned model the removed run then maps ``out_p`` to ``L`` = the residual after block
``j − 1``. After pruning, ``out_p`` feeds block ``j`` directly. ReplaceMe fits one matrix ``T``
(d × d) on calibration tokens::

    T* = argmin_T ‖ M T − (L − Y) ‖²_F   (+ λ‖T − I‖² with ridge λ: shrunk towards plain removal, T = I)

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
corrected rather than compounded. The teacher's targets of every run come from one teacher pass over
the calibration blocks, and while the student's prefix is still the teacher's own (the first run)
its ``Y`` and ``M`` come from that same pass. Several fits on the same teacher and calibration blocks
(notebook 05 fits one per pipeline and ratio) can share one teacher pass through ``TeacherStreams``,
the teacher's residual stream entering every block: each fit then reads its targets there, and its
``Y`` and ``M`` from block ``p`` alone run on the stream entering it (bit-identical to a full pass).
A cut that starts at block 0 has nothing before it to fold a patch into and is refused.

The least-squares problem is accumulated as normal equations in float64 batch by batch (memory is
``O(d²)`` whatever the number of tokens) and solved with a pseudo-inverse, which returns the
minimum-norm solution when ``MᵀM`` is singular.
"""

from __future__ import annotations

import time
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


def _capture(
    model: nn.Module, ids: torch.Tensor | None, wants: dict[str, tuple[nn.Module, str]], *,
    block: int | None = None, stream: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``model``'s trunk on ``ids`` and return the tensors named in ``wants`` (stops early).

    ``wants`` maps a key to ``(module, kind)`` with kind ``"in"`` (first positional input) or
    ``"out"`` (output). With ``block`` and ``stream`` instead of ``ids``: block ``block`` alone, run
    on ``stream`` (the residual stream entering it); the trunk's blocks are swapped for that one
    (and restored), so positions, rotary embeddings and the causal mask are made as in a full pass.
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
    inner = model.model
    layers = inner.layers
    try:
        if block is None:
            inner(input_ids=ids, use_cache=False)
        else:
            inner.layers = nn.ModuleList([layers[block]])
            inner(inputs_embeds=stream, use_cache=False)
    except _Stop:
        pass
    finally:
        inner.layers = layers
        for h in handles:
            h.remove()
    missing = set(wants) - set(got)
    if missing:
        raise RuntimeError(f"forward pass did not reach {sorted(missing)}")
    return got


STREAMS_IN_MEMORY = 3 * 2**30  # bytes of teacher streams ``TeacherStreams`` keeps; beyond it, fits run the teacher themselves


class TeacherStreams:
    """The teacher's residual stream entering each of its blocks on a set of calibration blocks, kept for
    several fits (``linear_patch(..., streams=…)``; notebook 05 fits one patch per pipeline and ratio).

    A fit given this object reads its targets ``L`` here instead of running the teacher, and where the
    student's prefix is the teacher's, ``Y`` and ``M`` from block ``p`` alone run on the stream
    entering it: bit-identical to a fit without it. The streams are computed by one teacher pass the
    first time they are asked for, and again only for another teacher object, other calibration blocks
    or another batch size (replacing the previous ones): the teacher's weights must not change while
    the object is in use (no stage trains the teacher; students are copies). They are held in memory, ``(blocks + 1) × tokens
    × hidden size`` floats (2.3 GB for SmolLM2 at 32k tokens); above ``limit`` bytes none are kept and
    each fit runs the teacher itself. Drop the object to free them.

    ``credit_s`` keeps each fit's clock honest (``heal`` adds its change to the run's patch and wall time):
    a fit that reads stored streams is credited the teacher pass it would have made alone (that pass's
    share of the blocks it needs: up to the deepest removed block), and the fit that computes them is
    debited the blocks beyond that. So every fit costs what it would cost alone, whichever came first.
    """

    def __init__(self, limit: int = STREAMS_IN_MEMORY) -> None:
        self.limit = limit
        self.credit_s = 0.0
        self._key: tuple[PreTrainedModel, torch.Tensor, int] | None = None
        self._streams: list[list[torch.Tensor]] = []  # [batch][i]: entering block i (i = blocks: leaving the last)
        self._seconds = 0.0  # of the pass that computed them

    @torch.no_grad()
    def get(self, teacher: PreTrainedModel, calib_blocks: torch.Tensor, batch_size: int,
            depth: int | None = None) -> list[list[torch.Tensor]] | None:
        """``[batch][i]``, the stream entering block ``i`` of ``teacher`` on each batch of ``calib_blocks``
        (``i`` = number of blocks: leaving the last); ``None`` when they would take more than ``limit``.
        ``depth``: the blocks the caller's own teacher pass would run (``credit_s``; default all)."""
        layers = decoder_layers(teacher)
        share = (len(layers) if depth is None else depth) / len(layers)
        if (len(layers) + 1) * calib_blocks.numel() * teacher.config.hidden_size * 4 > self.limit:
            return None
        if self._key is not None:
            t, c, b = self._key
            if t is teacher and b == batch_size and c.shape == calib_blocks.shape and torch.equal(c, calib_blocks):
                self.credit_s += self._seconds * share
                return self._streams
        self._key, self._streams = None, []  # free the previous streams before computing new ones
        started = time.perf_counter()
        dev = model_device(teacher)
        wants = {"0": (layers[0], "in"), **{str(i + 1): (layer, "out") for i, layer in enumerate(layers)}}
        for start in range(0, len(calib_blocks), batch_size):
            got = _capture(teacher, calib_blocks[start : start + batch_size].to(dev), wants)
            self._streams.append([got[str(i)] for i in range(len(layers) + 1)])
        self._key, self._seconds = (teacher, calib_blocks.clone(), batch_size), time.perf_counter() - started
        self.credit_s -= self._seconds * (1 - share)
        return self._streams


@torch.no_grad()
def _same_prefix(student: PreTrainedModel, teacher: PreTrainedModel, p: int, via_attention: bool = False) -> bool:
    """Whether the student's embeddings and blocks 0 … p are exactly the teacher's blocks 0 … p (with
    ``via_attention``: block p's attention half only, its MLP being the part removed)."""
    if lineage(student)["kept_layers"][: p + 1] != list(range(p + 1)):
        return False
    s_layers, t_layers = decoder_layers(student), decoder_layers(teacher)
    pairs = [(student.get_input_embeddings(), teacher.get_input_embeddings())]
    pairs += [(s_layers[k], t_layers[k]) for k in range(p if via_attention else p + 1)]
    if via_attention:
        pairs += [(s_layers[p].input_layernorm, t_layers[p].input_layernorm), (s_layers[p].self_attn, t_layers[p].self_attn)]
    for a, b in pairs:
        sa, sb = a.state_dict(), b.state_dict()
        if list(sa) != list(sb):  # a sub-block removed from the student
            return False
        for ta, tb in zip(sa.values(), sb.values(), strict=True):
            if ta.shape != tb.shape or ta.device != tb.device or not torch.equal(ta, tb):
                return False
    return True


TARGETS_IN_MEMORY = 2**30  # bytes of teacher targets kept for later runs; beyond it, one teacher pass per run


def _fit_points(block: nn.Module, via_attention: bool) -> dict[str, tuple[nn.Module, str]]:
    """Where a fit reads ``Y`` (the stream before the patched projection's output is added) and ``M``
    (that projection's output) in ``block``: the MLP's, or the attention's where the MLP was removed."""
    if via_attention:
        return {"Y": (block, "in"), "M": (block.self_attn, "out")}
    return {"Y": (block.post_attention_layernorm, "in"), "M": (block.mlp, "out")}


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
    streams: TeacherStreams | None = None,
) -> list[PatchFit]:
    """Fit and fold a ReplaceMe patch for each removed run of ``student`` (modified in place).

    Args:
        student: the pruned model (its ``config.frankenllama`` lineage names the removed layers).
        teacher: the unpruned model it was cut from; supplies the targets ``L``.
        calib_blocks: ``(N, T)`` calibration token blocks.
        layers: original ids of the removed layers to patch (whole runs); ``None`` → every run.
        ridge: λ relative to the mean eigenvalue of ``MᵀM``, pulling ``T`` towards the identity (plain removal;
            0 → plain least squares, ∞ → no patch).
        streams: the teacher's streams shared with other fits on the same calibration blocks
            (computed here if it holds none for them); ``None``: this fit runs the teacher itself.
    """
    check_teacher_lineage(student, teacher)
    runs = patch_runs(student, layers)
    kept = lineage(student)["kept_layers"]
    s_layers, t_layers = decoder_layers(student), decoder_layers(teacher)
    s_dev, t_dev = model_device(student), model_device(teacher)
    d = student.config.hidden_size
    batches = [calib_blocks[start : start + batch_size] for start in range(0, len(calib_blocks), batch_size)]
    if ridge == 0 and len(calib_blocks) * calib_blocks.shape[1] < d:
        raise PatchError(
            f"{calib_blocks.numel()} calibration tokens are fewer than the hidden size {d}: the least-squares "
            "fit is underdetermined and would overfit; give more calibration tokens or a ridge > 0"
        )
    starts = [run for run in runs if run[0] == 0]
    if starts:
        raise PatchError(
            f"the removed run {list(starts[0])} starts at block 0: there is no MLP before the cut to fold a patch into"
        )
    # The teacher does not change while the student is patched: its targets come from the shared streams, or
    # else the first run's teacher pass also keeps the targets L of the later runs (one teacher pass per batch
    # in all), when they fit in TARGETS_IN_MEMORY.
    depth = max(run[-1] for run in runs) + 1  # the teacher blocks a pass of this fit's own would run
    kept_streams = streams.get(teacher, calib_blocks, batch_size, depth) if streams is not None else None
    keep = kept_streams is None and calib_blocks.numel() * d * 4 * (len(runs) - 1) <= TARGETS_IN_MEMORY
    later: list[dict[str, torch.Tensor]] = []
    fits = []
    for r, run in enumerate(runs):
        p = kept.index(run[0] - 1)
        block = s_layers[p]
        # the last projection into the stream before the cut: the MLP's, or the attention's where the MLP was removed
        via_attention = p in removed_sublayers(student)["mlp"]
        projection = block.self_attn.o_proj if via_attention else block.mlp.down_proj
        # Before any patch is folded the student's prefix (and block p's half that writes M) can be the
        # teacher's own: then Y and M are read from the teacher's pass too and the student's pass is skipped.
        shared = r == 0 and _same_prefix(student, teacher, p, via_attention)
        t_wants = {f"L{q}": (t_layers[runs[q][-1]], "out") for q in (range(len(runs)) if r == 0 and keep else (r,))}
        if shared:
            t_wants |= _fit_points(t_layers[run[0] - 1], via_attention)
        gram = torch.zeros(d, d, dtype=torch.float64)  # MᵀM
        cross = torch.zeros(d, d, dtype=torch.float64)  # Mᵀ(L − Y)
        err_id = target_sq = 0.0
        tokens = 0
        for b, ids in enumerate(batches):
            if kept_streams is not None:
                got = {"L": kept_streams[b][run[-1] + 1]}  # leaving the run's last block
                if shared:
                    got |= _capture(teacher, None, _fit_points(t_layers[run[0] - 1], via_attention), block=run[0] - 1,
                                    stream=kept_streams[b][run[0] - 1])  # fmt: skip
            elif r > 0 and keep:
                got = {"L": later[b][f"L{r}"]}
            else:
                t_got = _capture(teacher, ids.to(t_dev), t_wants)
                if r == 0 and keep:
                    later.append({k: v for k, v in t_got.items() if k.startswith("L") and k != "L0"})
                got = {"L": t_got[f"L{r}"], **({"Y": t_got["Y"], "M": t_got["M"]} if shared else {})}
            if not shared:
                got |= _capture(student, ids.to(s_dev), _fit_points(block, via_attention))
            m = got["M"].reshape(-1, d).double().cpu()  # (n, d)
            delta = (got["L"].to(s_dev) - got["Y"].to(s_dev)).reshape(-1, d).double().cpu()  # (n, d)
            gram += m.T @ m
            cross += m.T @ delta
            target_sq += float((delta**2).sum())
            err_id += float(((m - delta) ** 2).sum())
            tokens += m.shape[0]
        lam = ridge * float(torch.trace(gram)) / d
        eye = torch.eye(d, dtype=torch.float64)
        transform = torch.linalg.pinv(gram + lam * eye, hermitian=True) @ (cross + lam * eye)  # (MᵀM + λI)⁻¹(MᵀΔ + λI)
        # ‖MT − Δ‖² = tr(Tᵀ MᵀM T) − 2 tr(Tᵀ MᵀΔ) + ‖Δ‖², from the accumulated statistics
        resid = float(torch.trace(transform.T @ gram @ transform) - 2 * torch.trace(transform.T @ cross)) + target_sq
        fold_into_projection(projection, transform)
        fits.append(PatchFit(run, p, max(resid, 0.0) / target_sq, err_id / target_sq, tokens))
    return fits
