"""A model's shapes from its config alone: the meta-device skeleton, parameter counts and FLOPs.

The skeleton is built with ``accelerate.init_empty_weights`` + ``AutoModelForCausalLM.from_config``:
every parameter lives on the ``meta`` device, so no weight file is opened and a 70B model costs a
few seconds and no memory. Counts are the exact ``numel`` sums of that skeleton.

FLOP conventions (Kaplan et al. 2020, arXiv:2001.08361, §2.1; Chinchilla's appendix F):

* a matmul with a weight of ``m × n`` costs ``2·m·n`` FLOPs per token in the forward pass;
  norms, activations, RoPE and residual adds are left out (< 1 % at these widths);
* causal self-attention adds ``4 · n_heads · head_dim · c`` per token and block (``QKᵀ`` and ``A·V``),
  with ``c = (T + 1) / 2`` the mean number of attended positions in a causal block of ``T`` tokens
  (flash/SDPA kernels skip the masked half);
* the embedding is a lookup (0 FLOPs); the LM head costs ``2 · hidden · vocab`` per scored position;
* backward = 2 × forward for weights that are trained (gradients of activations and of weights),
  1 × forward for frozen weights that gradients must pass through (activation gradients only).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from frankenllama.cli import UsageError


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs to know of a llama-family model, read off its meta skeleton."""

    name: str
    num_layers: int  # L
    hidden: int  # H
    intermediate: int  # I
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int  # V
    tied: bool  # LM head shares the embedding matrix
    params: int  # exact numel sum (tied matrices counted once)
    block_params: int  # numel of one decoder block (all blocks are equal in this family)
    block_matmul_params: int  # weights of the block's linear layers (its FLOP-bearing parameters)
    embed_params: int
    head_params: int  # the LM head's own parameters (0 when tied)
    dtype_bytes_saved: int  # bytes per parameter of the checkpoint's dtype (2 for bfloat16)

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    def block_flops(self, block_len: int) -> float:
        """Forward FLOPs per token of one decoder block on causal blocks of ``block_len`` tokens."""
        attend = (block_len + 1) / 2
        return 2.0 * self.block_matmul_params + 4.0 * self.q_dim * attend

    def head_flops(self) -> float:
        """Forward FLOPs per scored position of the LM head (final norm not counted)."""
        return 2.0 * self.hidden * self.vocab

    def forward_flops(self, block_len: int, layers: int | None = None) -> float:
        """Forward FLOPs per token of the model with ``layers`` blocks (default all), LM head included."""
        n = self.num_layers if layers is None else layers
        return n * self.block_flops(block_len) + self.head_flops()

    def weight_bytes(self, dtype_bytes: int, layers: int | None = None) -> float:
        """Bytes of the weights of the model with ``layers`` blocks (default all)."""
        n = self.num_layers if layers is None else layers
        return float(self.params - (self.num_layers - n) * self.block_params) * dtype_bytes


@contextmanager
def _quiet(logger: str):
    """Silence one library logger (accelerate warns that planned-for devices are absent here)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def config_folder(model: str) -> Path:
    """A folder holding ``config.json`` for a config path, a folder or a registry name already cached."""
    from frankenllama.models import MODELS
    from frankenllama.paths import MODELS_CACHE_DIR

    path = Path(model).expanduser()
    if path.name == "config.json" and path.is_file():
        return path.parent
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"{path} has no config.json; pass a transformers model folder or its config.json")
        return path
    if model in MODELS:
        folder = MODELS_CACHE_DIR / model
        if not (folder / "config.json").is_file():
            raise UsageError(f"registry model {model!r} is not cached yet; run `make prepare` (or load it once) first")
        return folder
    raise UsageError(f"--model {model!r} is neither a config.json, a folder holding one, nor a registry name ({sorted(MODELS)})")


def meta_model(model: str) -> nn.Module:
    """The model's skeleton on the meta device, built from its config.json alone (no weights read)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from frankenllama.models import decoder_layers

    folder = config_folder(model)
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with init_empty_weights():
        skeleton = AutoModelForCausalLM.from_config(config)
    decoder_layers(skeleton)
    if getattr(config, "tie_word_embeddings", False):
        skeleton.tie_weights()  # init_empty_weights leaves a tied head as its own meta tensor
    skeleton.name_or_path = str(model)
    return skeleton


def model_shape(skeleton: nn.Module) -> ModelShape:
    """Exact counts of a meta skeleton (see ``ModelShape``)."""
    from frankenllama.models import decoder_layers

    config = skeleton.config
    block = decoder_layers(skeleton)[0]
    embed = skeleton.get_input_embeddings().weight
    head = skeleton.get_output_embeddings().weight
    tied = head is embed
    params = sum(p.numel() for p in skeleton.parameters())  # parameters() yields a tied matrix once
    n_heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    return ModelShape(
        name=str(getattr(skeleton, "name_or_path", "")),
        num_layers=len(decoder_layers(skeleton)),
        hidden=config.hidden_size,
        intermediate=config.intermediate_size,
        n_heads=n_heads,
        n_kv_heads=getattr(config, "num_key_value_heads", None) or n_heads,
        head_dim=head_dim,
        vocab=embed.shape[0],
        tied=tied,
        params=params,
        block_params=sum(p.numel() for p in block.parameters()),
        block_matmul_params=sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Linear)),
        embed_params=embed.numel(),
        head_params=0 if tied else head.numel(),
        dtype_bytes_saved=torch.empty(0, dtype=dtype).element_size(),
    )
