"""The workbook's stages as footprints and FLOP counts (formulas in ``frankenllama.plan.stages``).

Notation: N tokens of the stage, T block length, B blocks per batch, L blocks of the unpruned model,
k removed, S = L − k, f_blk = forward FLOPs per token of one block, f_head = of the LM head.
Every search count is the exact search's upper bound: the searches' exact vocabulary bound and the
greedy shortlist (``ScoringConfig.shortlist``) skip most candidates' LM heads and many block runs.
"""

from __future__ import annotations

from frankenllama.plan.stages import F32, Footprint, Planner, Settings, StageEstimate, infer_token_bytes, logits_bytes


def similarity_pass(p: Planner, s: Settings) -> StageEstimate:
    """One forward pass of the trunk, residual streams of all L + 1 depths captured per batch.

    Memory: the batch's L + 1 captured states in the model dtype, their float32 stack and unit vectors
    (2 × float32) and the per-token (L + 1)² cosine and angle matrices, all on the embedding's device.
    FLOPs: ``N·(L·f_blk + 2·(L+1)²·H)`` (the second term: the cosine einsum); no LM head.
    """
    m, b, L = p.shape, p.bytes, p.shape.num_layers
    bt = s.calib_batch * s.calib_block_len
    stats = bt * ((L + 1) * m.hidden * (b + 2 * F32) + 2 * (L + 1) ** 2 * F32)
    fp = Footprint((L,), each=bt * infer_token_bytes(m, b), first=stats)
    flops = s.calib_tokens * (L * m.block_flops(s.calib_block_len) + 2 * (L + 1) ** 2 * m.hidden)
    return p.row("similarity", f"{s.calib_tokens:,} tok, T={s.calib_block_len}, B={s.calib_batch}", fp, flops)


def scan_footprint(p: Planner, s: Settings) -> Footprint:
    """One batch of the one-block-out ablation scan with KL (``ablation_scan``, granularity "layer").

    Per block: the batch's stream entering it. On the embedding's device: ``_pair_stats`` (as the
    similarity pass). On the head's device: the reference log-probabilities ``B·T·V`` float32 and one
    sample's logits for the ablated NLL and KL.
    """
    m, b, L = p.shape, p.bytes, p.shape.num_layers
    bt = s.score_batch * s.score_block_len
    stats = bt * ((L + 1) * m.hidden * 2 * F32 + 2 * (L + 1) ** 2 * F32)
    head = bt * m.vocab * F32 + s.score_block_len * logits_bytes(m, b) * 2
    return Footprint((L,), per_layer=bt * m.hidden * b, each=bt * infer_token_bytes(m, b), first=stats, last=head)


def ablation_scan(p: Planner, s: Settings) -> StageEstimate:
    """One-block-out ablation of all L blocks: ``N·(L·f_blk + L(L−1)/2·f_blk + (2L + 2)·f_head)``.

    Block u's ablation restarts from the cached stream entering u and runs the L − 1 − u blocks after
    it; each unit costs an LM head for its NLL and one for its KL, plus the base NLL and reference.
    """
    m, L, T = p.shape, p.shape.num_layers, s.score_block_len
    flops = s.score_tokens * ((L + L * (L - 1) / 2) * m.block_flops(T) + (2 * L + 2) * m.head_flops())
    return p.row("ablation scan", f"{L} units, {s.score_tokens:,} tok, T={T}, B={s.score_batch}",
                 scan_footprint(p, s), flops)


def search_footprint(p: Planner, s: Settings) -> Footprint:
    """The searches' ``Trunk``: the stream entering every block for all N calibration tokens (model dtype),
    one block's working activations, and on the head's device the bounded evaluation's normalised final
    streams (N·H) and one sample's full logits."""
    m, b, L = p.shape, p.bytes, p.shape.num_layers
    bt = s.score_batch * s.score_block_len
    last = s.score_tokens * m.hidden * b * 2 + s.score_block_len * logits_bytes(m, b)
    return Footprint((L,), per_layer=s.score_tokens * m.hidden * b, each=bt * infer_token_bytes(m, b), last=last)


def sleb_search(p: Planner, s: Settings) -> StageEstimate:
    """SLEB greedy removal to k (Song et al. 2024, arXiv:2402.09025), cached streams.

    The first step reads the one-block-out ablation scan (a row of its own). Step j ≥ 1 (j blocks
    removed, A = L − j alive): each of its C candidates (every alive block, or the ``shortlist``)
    runs the alive blocks after it (≈ A/2 on average) and an LM head; then the streams are refreshed
    from the chosen block (≈ A/2). FLOPs: ``N·(L·f_blk + Σ_{j≥1} [(C + 1)·A/2·f_blk + C·f_head])``.
    """
    m, L, T = p.shape, p.shape.num_layers, s.score_block_len
    k = s.removed(L)
    per_token = L * m.block_flops(T)
    for j in range(1, k):
        alive = L - j
        c = alive if s.shortlist is None else min(alive, s.shortlist)
        per_token += (c + 1) * alive / 2 * m.block_flops(T) + c * m.head_flops()
    what = f"to k={k}, {s.score_tokens:,} tok" + ("" if s.shortlist is None else f", shortlist {s.shortlist}")
    return p.row("SLEB greedy", what, search_footprint(p, s), s.score_tokens * per_token, upper_bound=True)


def swap_search(p: Planner, s: Settings) -> StageEstimate:
    """Swap search from SLEB's choice (``swap_search``): each round evaluates every swap of a removed
    block for a kept neighbour, ``C = k·min(2k, L − k)`` candidates, each from the first changed block
    (≈ L/2 blocks) plus an LM head. FLOPs: ``N·(L·f_blk + R·C·(L/2·f_blk + f_head))``, R = max rounds."""
    m, L, T = p.shape, p.shape.num_layers, s.score_block_len
    k = s.removed(L)
    candidates = k * min(2 * k, L - k)
    per_token = L * m.block_flops(T) + s.swap_rounds * candidates * (L / 2 * m.block_flops(T) + m.head_flops())
    return p.row("swap search", f"k={k}, <= {s.swap_rounds} rounds x {candidates} swaps", search_footprint(p, s),
                 s.score_tokens * per_token, upper_bound=True)


def sublayer_scan(p: Planner, s: Settings) -> StageEstimate:
    """One-sub-block-out ablation of all 2L attention and MLP sub-blocks (NLL only: part-swap's cost).

    Sub-block u of block ℓ restarts from the cached stream entering ℓ and runs the L − ℓ blocks from
    there (without u), then an LM head: ``N·(L·f_blk + L(L+1)·f_blk + (2L + 1)·f_head)``.
    """
    m, L, T = p.shape, p.shape.num_layers, s.score_block_len
    flops = s.sublayer_tokens * ((L + L * (L + 1)) * m.block_flops(T) + (2 * L + 1) * m.head_flops())
    return p.row("sub-block scan", f"{2 * L} units, {s.sublayer_tokens:,} tok, T={T}, B={s.score_batch}",
                 scan_footprint(p, s), flops)


def part_swap(p: Planner, s: Settings) -> StageEstimate:
    """Part-swap from swap search's k blocks (``part_swap_search``): each round tries, for each of the
    ``part_width`` cheapest kept attentions, the k swaps that put a removed attention back for it, every
    trial from the first changed block (≈ L/2 blocks) plus an LM head, after refreshing the streams
    from that block once per kept attention: ``N·(L·f_blk + R·W·((k + 1)·L/2·f_blk + k·f_head))``."""
    m, L, T = p.shape, p.shape.num_layers, s.score_block_len
    k, W, R = s.removed(L), s.part_width, s.part_rounds
    per_token = L * m.block_flops(T) + R * W * ((k + 1) * L / 2 * m.block_flops(T) + k * m.head_flops())
    return p.row("part-swap search", f"{R} round x {W * k} swaps of attentions", search_footprint(p, s),
                 s.score_tokens * per_token, upper_bound=True)


def compress_evaluation(p: Planner, s: Settings) -> StageEstimate:
    """compress's report: the original (L blocks) and the compressed model (S) each over the zero-shot tokens
    and the held-out perplexity tokens of both domains, forward only; the original's footprint."""
    m, L = p.shape, p.shape.num_layers
    S = L - s.removed(L)
    tokens = s.eval_tokens + s.ppl_tokens
    flops = tokens * (m.forward_flops(s.eval_block_len, L) + m.forward_flops(s.eval_block_len, S))
    fp = evaluation_footprint(p, s, L)
    return p.row("evaluate both", f"original + {S} blocks, {s.eval_tokens:,} + {s.ppl_tokens:,} tok", fp, flops)


def evaluation_footprint(p: Planner, s: Settings, blocks: int) -> Footprint:
    """One batch's block activations and logits, and a KV cache of B sequences of T tokens for the speed check."""
    m, b = p.shape, p.bytes
    bt = s.eval_batch * s.eval_block_len
    return Footprint((blocks,), per_layer=bt * 2 * m.kv_dim * b, each=bt * infer_token_bytes(m, b),
                     last=bt * logits_bytes(m, b))


def evaluation(p: Planner, s: Settings) -> StageEstimate:
    """Zero-shot evaluation of the pruned model: ``N·(S·f_blk + f_head)`` forward only.

    Memory: one batch's block activations and logits, plus a KV cache of B sequences of T tokens
    (``2·kv·b`` per token and block) for the prefill/decode speed check.
    """
    m, L = p.shape, p.shape.num_layers
    S = L - s.removed(L)
    fp = evaluation_footprint(p, s, S)
    flops = s.eval_tokens * m.forward_flops(s.eval_block_len, S)
    return p.row("zero-shot eval", f"{S} blocks, {s.eval_tokens:,} tok, T={s.eval_block_len}, B={s.eval_batch}", fp, flops)
