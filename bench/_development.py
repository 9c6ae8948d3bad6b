"""The development text of the bench probes: eval blocks that the default profile never reports on.

On the default profile the notebooks and ``compress`` score the first blocks of 256 tokens of each
eval split (``compress`` 32); the probes that chose the recipe read later blocks of the same splits,
so a choice is not tuned on the text it is reported on. (``compress --profile thesis`` scores 64
blocks, which overlap the out-of-domain ones here.)
"""
from frankenllama.data import load_corpus, token_blocks

OOD_BLOCKS = slice(48, 80)  # olmo-passages eval: out of domain
IN_BLOCKS = slice(24, 40)  # wiki-leads eval: in domain (zero_shot_recipe_probe reads 32-56)
# the cut the probes study: part-swap at k = 6 of SmolLM2's 30 blocks (figures/pruning_curve.csv), what
# compress --target 0.843 removes: 5.attn, 13.mlp and blocks 14-18 as sub-block ids (2l attention, 2l+1 MLP)
PART_SWAP_20 = (10, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37)


def development_blocks(tokenizer, in_blocks: slice = IN_BLOCKS, block_len: int = 256):
    """Out-of-domain and in-domain development blocks (token-id tensors), in that order."""
    ood = token_blocks(tokenizer, load_corpus("olmo-passages", "eval"), block_len, max_blocks=OOD_BLOCKS.stop)
    ind = token_blocks(tokenizer, load_corpus("wiki-leads", "eval"), block_len, max_blocks=in_blocks.stop)
    return ood[OOD_BLOCKS], ind[in_blocks]
