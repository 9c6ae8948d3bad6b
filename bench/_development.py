"""The development text of the bench probes: eval blocks that the default profile never reports on.

On the default profile the notebooks and ``compress`` score the first blocks of 256 tokens of each
eval split (``compress`` 32); the probes that chose the recipe read later blocks of the same splits,
so a choice is not tuned on the text it is reported on. (``compress --profile thesis`` scores 64
blocks, which overlap the out-of-domain ones here.)
"""
from frankenllama.data import load_corpus, token_blocks

OOD_BLOCKS = slice(48, 80)  # olmo-passages eval: out of domain
IN_BLOCKS = slice(24, 40)  # wiki-leads eval: in domain (zero_shot_recipe_probe reads 32-56)


def development_blocks(tokenizer, in_blocks: slice = IN_BLOCKS, block_len: int = 256):
    """Out-of-domain and in-domain development blocks (token-id tensors), in that order."""
    ood = token_blocks(tokenizer, load_corpus("olmo-passages", "eval"), block_len, max_blocks=OOD_BLOCKS.stop)
    ind = token_blocks(tokenizer, load_corpus("wiki-leads", "eval"), block_len, max_blocks=in_blocks.stop)
    return ood[OOD_BLOCKS], ind[in_blocks]
