"""Export llama-family models, whole or depth-pruned, to GGUF files that llama.cpp runs faithfully.

Pure Python through the ``gguf`` package (``GGUFWriter``, ``gguf.quants``); no llama.cpp build is
needed to export. Conventions follow llama.cpp's ``convert_hf_to_gguf.py`` (``LlamaModel``):

- tensor names ``token_embd``, ``blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,
  ffn_gate,ffn_up,ffn_down}``, ``output_norm``, ``output``; ``output`` is omitted when the input and
  output embeddings are tied (llama.cpp then reuses ``token_embd``);
- the rows of ``attn_q`` / ``attn_k`` are permuted per head (``LlamaModel.permute``): transformers
  rotates the two halves of each head (``rotate_half``), llama.cpp's "normal" rope rotates adjacent
  pairs; the permutation makes the two identical;
- 1-D tensors (norms) stay F32; ``q8_0`` / ``q4_0`` quantize 2-D weights whose rows are a multiple
  of the 32-value block (others fall back to F16, as the conversion script does); with ``q4_0`` the
  token embedding, which is also the output head when tied, is stored ``q8_0`` (llama-quantize keeps
  the output head at a higher precision too; ``gguf.quants`` cannot write its Q6_K);
- ``llama.rope.freq_base`` from ``rope_theta``; linear scaling as metadata; llama3 scaling as the
  ``rope_freqs`` tensor.

Depth pruning: a model with whole blocks removed (``frankenllama.surgery.drop_layers``) is an
ordinary ``llama`` file with the new ``block_count``. A model with attention or MLP sub-blocks
removed (``frankenllama.sublayer``) needs per-layer shapes, which llama.cpp's ``deci`` architecture
(Nemotron-NAS) reads as arrays: ``head_count``, ``head_count_kv``, ``feed_forward_length``. Its graph
(``src/models/deci.cpp``) was read for this, and does:

- ``n_head == 0``: no attention tensors, the layer's stream goes straight to the MLP — exactly a
  removed attention (``x + MLP(norm₂(x))``). Written as head_count = head_count_kv = 0.
- ``n_ff == 0``: ``continue`` *before* the attention's residual add, so the layer's output would be
  its input and a kept attention would be silently lost (and in the last layer the output-row
  selection is skipped). A removed MLP is therefore written as a zero MLP stub: feed_forward_length
  1 with all-zero gate/up/down and norm weights (zero is exact in every storage type), whose output
  is exactly 0, so the graph adds attention and residual as usual (4·n_embd values per stub).
- head size is derived from layer 0's head count, so block 0 must keep its attention; otherwise the
  export is refused (remove block 0 whole, or keep its attention).

The pruning provenance goes to ``general.pruning.*`` keys: the original block count, the removed
blocks and sub-blocks in original indices, and a one-line summary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedModel

from frankenllama.cache import atomic_file
from frankenllama.export.vocab import add_vocab, check_tokenizer
from frankenllama.models import MODELS, check_architecture, decoder_layers, load_model, model_folder
from frankenllama.sublayer import RemovedAttention, RemovedMLP
from frankenllama.surgery import lineage, removed_layers

Q = gguf.GGMLQuantizationType
# qtype -> (dtype of 2-D weights, llama.cpp general.file_type)
QTYPES: dict[str, tuple[Q, gguf.LlamaFileType]] = {
    "f32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (Q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (Q.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
}
SUPPORTED_MODEL_TYPES = ("llama", "mistral")
STUB_FF = 1  # feed_forward_length of a removed MLP's zero stub (see the module docstring)


class ExportError(ValueError):
    """The source cannot be exported as asked; nothing was written."""


@dataclass(frozen=True)
class LayerShape:
    """One exported block: its head counts and MLP width (0 heads = attention removed; stub = MLP removed)."""

    n_head: int
    n_head_kv: int
    n_ff: int
    mlp_stub: bool = False


def check_output(out: str | Path, force: bool = False) -> Path:
    """Refuse an output path in a missing folder, or an existing file without ``force``."""
    path = Path(out).expanduser()
    if not path.parent.is_dir():
        raise ExportError(f"output folder {path.parent} does not exist: create it first")
    if path.is_dir():
        raise ExportError(f"output {path} is a folder: give a file name such as {path / 'model.gguf'}")
    if path.exists() and not force:
        raise ExportError(f"{path} exists: pass force=True (--force) to overwrite it")
    return path


def check_qtype(qtype: str) -> str:
    if qtype not in QTYPES:
        raise ExportError(f"unknown qtype {qtype!r}: choose one of {', '.join(QTYPES)}")
    return qtype


def resolve_source(src: str | Path) -> Path:
    """The transformers folder of ``src`` (registry name or folder), refusing non-llama models up front."""
    if str(src).endswith(".gguf"):
        raise ExportError(f"{src} is already a GGUF file: export from a registry name or a transformers folder")
    try:
        folder = model_folder(src)
        config = check_architecture(folder)
    except (ValueError, FileNotFoundError, OSError) as err:
        raise ExportError(f"cannot export {src}: {err}") from err
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ExportError(
            f"{src} is a {config.model_type!r} model: GGUF export supports llama-architecture checkpoints "
            f"({', '.join(SUPPORTED_MODEL_TYPES)}); convert others with llama.cpp's convert_hf_to_gguf.py"
        )
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ExportError(f"{src} has attention or MLP biases, which this exporter does not write")
    return folder


def layer_shapes(model: PreTrainedModel) -> list[LayerShape]:
    """Per-block head counts and MLP width of a (possibly sub-block-pruned) model, as llama.cpp reads them."""
    config = model.config
    shapes = []
    for block in decoder_layers(model):
        attn = not isinstance(block.self_attn, RemovedAttention)
        mlp = not isinstance(block.mlp, RemovedMLP)
        shapes.append(LayerShape(
            n_head=config.num_attention_heads if attn else 0,
            n_head_kv=config.num_key_value_heads if attn else 0,
            n_ff=config.intermediate_size if mlp else STUB_FF,
            mlp_stub=not mlp,
        ))
    if shapes and shapes[0].n_head == 0 and any(s.n_head for s in shapes):
        raise ExportError(
            "block 0 has no attention: llama.cpp derives the head size of every layer from layer 0's head "
            "count, so this shape cannot be expressed faithfully; remove block 0 whole or keep its attention"
        )
    return shapes


def permute_rope(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Reorder the rows of a q/k projection (out, in) from transformers' half-split rope to llama.cpp's pairs.

    ``LlamaModel.permute`` of ``convert_hf_to_gguf.py``: (n_head, 2, d/2, in) → (n_head, d/2, 2, in).
    """
    out, inp = weight.shape
    return weight.reshape(n_head, 2, out // n_head // 2, inp).transpose(1, 2).reshape(out, inp)


def encode(name: str, array: np.ndarray, qtype: str) -> tuple[np.ndarray, Q]:
    """The stored bytes and GGML type of one tensor under ``qtype`` (see the module docstring)."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    target = QTYPES[qtype][0]
    if array.ndim < 2 or target == Q.F32:
        return array, Q.F32
    if qtype == "q4_0" and name == "token_embd.weight":
        target = Q.Q8_0
    if target in (Q.Q8_0, Q.Q4_0) and array.shape[-1] % gguf.GGML_QUANT_SIZES[target][0] != 0:
        target = Q.F16
    if target == Q.F16:
        return array.astype(np.float16), Q.F16
    return gguf.quants.quantize(array, target), target


def model_tensors(model: PreTrainedModel, shapes: list[LayerShape]) -> dict[str, np.ndarray]:
    """The model's weights under llama.cpp's tensor names, float32, in file order (f32 (out, in) arrays)."""
    inner = model.model
    hidden = model.config.hidden_size
    tensors: dict[str, np.ndarray] = {"token_embd.weight": inner.embed_tokens.weight}
    for i, (block, shape) in enumerate(zip(decoder_layers(model), shapes)):
        p = f"blk.{i}."
        if shape.n_head:
            attn = block.self_attn
            tensors[p + "attn_norm.weight"] = block.input_layernorm.weight
            tensors[p + "attn_q.weight"] = permute_rope(attn.q_proj.weight, shape.n_head)
            tensors[p + "attn_k.weight"] = permute_rope(attn.k_proj.weight, shape.n_head_kv)
            tensors[p + "attn_v.weight"] = attn.v_proj.weight
            tensors[p + "attn_output.weight"] = attn.o_proj.weight
        if shape.mlp_stub:
            zero = torch.zeros(shape.n_ff, hidden)  # (n_ff, hidden): an MLP whose output is exactly 0
            tensors[p + "ffn_norm.weight"] = torch.zeros(hidden)
            tensors.update({p + "ffn_gate.weight": zero, p + "ffn_up.weight": zero, p + "ffn_down.weight": zero.T})
        else:
            tensors[p + "ffn_norm.weight"] = block.post_attention_layernorm.weight
            tensors[p + "ffn_gate.weight"] = block.mlp.gate_proj.weight
            tensors[p + "ffn_up.weight"] = block.mlp.up_proj.weight
            tensors[p + "ffn_down.weight"] = block.mlp.down_proj.weight
    tensors["output_norm.weight"] = inner.norm.weight
    lm_head = model.get_output_embeddings().weight
    if lm_head.data_ptr() != inner.embed_tokens.weight.data_ptr():
        tensors["output.weight"] = lm_head
    rope_freqs = llama3_rope_factors(model.config)
    if rope_freqs is not None:
        tensors["rope_freqs.weight"] = rope_freqs
    return {k: v.detach().float().cpu().contiguous().numpy() for k, v in tensors.items()}


def rope_parameters(config: Any) -> dict[str, Any]:
    """transformers' rope settings (v5 ``rope_parameters`` or v4 ``rope_theta`` + ``rope_scaling``)."""
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    params.setdefault("rope_type", params.get("type", "default"))
    return params


def llama3_rope_factors(config: Any) -> torch.Tensor | None:
    """Llama 3.1's frequency-dependent rope scaling as llama.cpp's ``rope_freqs`` tensor (None otherwise).

    The same formula as ``LlamaModel.generate_extra_tensors`` in ``convert_hf_to_gguf.py``.
    """
    params = rope_parameters(config)
    if params["rope_type"] != "llama3":
        return None
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    freqs = 1.0 / (params["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high = params.get("factor", 8.0), params.get("low_freq_factor", 1.0), params.get("high_freq_factor", 4.0)
    old = params.get("original_max_position_embeddings", 8192)
    factors = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            factors.append(1.0)
        elif wavelen > old / low:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(factors, dtype=torch.float32)


def add_hparams(writer: gguf.GGUFWriter, config: Any, shapes: list[LayerShape], qtype: str) -> None:
    """The ``{arch}.*`` hyper-parameters; per-layer arrays for ``deci``, scalars for ``llama``."""
    per_layer = writer.arch == "deci"
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_block_count(len(shapes))
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length([s.n_ff for s in shapes] if per_layer else config.intermediate_size)
    writer.add_head_count([s.n_head for s in shapes] if per_layer else config.num_attention_heads)
    writer.add_head_count_kv([s.n_head_kv for s in shapes] if per_layer else config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)
    params = rope_parameters(config)
    writer.add_rope_freq_base(float(params["rope_theta"]))
    if params["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(params["factor"]))
    elif params["rope_type"] not in ("default", "llama3"):
        raise ExportError(f"rope type {params['rope_type']!r} is not exported here (default, linear, llama3 are)")
    writer.add_file_type(QTYPES[qtype][1])
    if qtype in ("q8_0", "q4_0"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def pruning_record(model: PreTrainedModel, shapes: list[LayerShape]) -> dict[str, Any]:
    """What was removed, in original block indices: blocks, sub-blocks (``"7.attn"``), original depth."""
    record = lineage(model)
    kept = record["kept_layers"]
    subs = [f"{kept[i]}.attn" for i, s in enumerate(shapes) if s.n_head == 0]
    subs += [f"{kept[i]}.mlp" for i, s in enumerate(shapes) if s.mlp_stub]
    subs.sort(key=lambda name: (int(name.split(".")[0]), name))
    return {"original_block_count": record["original_num_hidden_layers"], "removed_blocks": removed_layers(model),
            "removed_sublayers": subs}


def add_general(writer: gguf.GGUFWriter, name: str, record: dict[str, Any]) -> None:
    """``general.*`` provenance: name, source model, and the ``general.pruning.*`` keys."""
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_uint32("general.base_model.count", 1)
    writer.add_string("general.base_model.0.name", name)
    writer.add_uint32("general.pruning.original_block_count", record["original_block_count"])
    writer.add_array("general.pruning.removed_blocks", record["removed_blocks"])
    writer.add_array("general.pruning.removed_sublayers", record["removed_sublayers"])
    writer.add_string("general.pruning.summary", (
        f"{len(record['removed_blocks'])} of {record['original_block_count']} blocks removed "
        f"{record['removed_blocks']}; sub-blocks removed {record['removed_sublayers']} (original indices)"
    ))


def write_gguf(
    model: PreTrainedModel, folder: Path, out: Path, qtype: str, name: str, pre_tokenizer: str | None = None
) -> dict[str, Any]:
    """Write ``model`` (tokenizer from ``folder``) to ``out`` through a temporary file and a rename.

    Returns a summary: architecture, block count, per-layer shapes, pruning record, bytes written.
    """
    shapes = layer_shapes(model)
    arch = "llama" if all(s.n_head and not s.mlp_stub for s in shapes) else "deci"
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    try:
        pre = check_tokenizer(folder, tokenizer, pre_tokenizer)
    except ValueError as err:
        raise ExportError(str(err)) from err
    record = pruning_record(model, shapes)
    for stale in out.parent.glob(f".{out.name}.*.tmp{out.suffix}"):  # what a killed export of this file left
        stale.unlink(missing_ok=True)
    with atomic_file(out) as tmp:  # renamed into place once whole; a full disk names the file and the bytes
        writer = gguf.GGUFWriter(tmp, arch)
        add_general(writer, name, record)
        add_hparams(writer, model.config, shapes, qtype)
        add_vocab(writer, folder, tokenizer, model.config.vocab_size, pre)
        for tensor_name, array in model_tensors(model, shapes).items():
            data, dtype = encode(tensor_name, array, qtype)
            writer.add_tensor(tensor_name, data, raw_dtype=dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return {"path": str(out), "arch": arch, "qtype": qtype, "block_count": len(shapes), "bytes": out.stat().st_size,
            "layers": [s.__dict__ for s in shapes], **record}


def export_gguf(
    src: str | Path | PreTrainedModel, out: str | Path, qtype: str = "f16", force: bool = False,
    pre_tokenizer: str | None = None, folder: str | Path | None = None,
) -> dict[str, Any]:
    """Export ``src`` to the GGUF file ``out`` with weights in ``qtype`` (f32, f16, bf16, q8_0, q4_0).

    ``src`` is a registry name, a transformers folder or a workbook variant folder (sub-block-pruned
    ones included: loaded through ``frankenllama.models.load_model``, which re-applies the recorded
    removals). An in-memory model can be passed too, with ``folder`` naming where its tokenizer is.
    Whole blocks removed give a ``llama`` file, sub-blocks removed a ``deci`` file (module docstring).
    Raises ``ExportError`` on bad input before anything is written; an existing ``out`` is only
    replaced with ``force``.
    """
    check_qtype(qtype)
    path = check_output(out, force)
    if isinstance(src, PreTrainedModel):
        if folder is None:
            raise ExportError("exporting an in-memory model needs folder= (where its tokenizer files are)")
        model, source, name = src, resolve_tokenizer_folder(folder), str(folder)
    else:
        source = resolve_source(src)
        name = str(src) if str(src) in MODELS else source.name
        try:
            model, _ = load_model(source, dtype=torch.float32, device="cpu")
        except Exception as err:  # safetensors, json and shape errors of a damaged folder
            raise ExportError(f"cannot load {src}: {type(err).__name__}: {err}. The folder is corrupt or "
                              "incomplete; re-create it (save_variant / save_pretrained)") from err
    return write_gguf(model, source, path, qtype, name, pre_tokenizer)


def resolve_tokenizer_folder(folder: str | Path) -> Path:
    path = Path(folder)
    if not (path / "tokenizer.json").is_file() and str(folder) in MODELS:
        path = model_folder(folder)
    if not (path / "tokenizer.json").is_file():
        raise ExportError(f"{folder} has no tokenizer.json: pass the model folder whose tokenizer to write")
    return path
