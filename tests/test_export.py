"""GGUF export and mergekit configs on pico llamas built in process (no llama.cpp needed)."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_llama
from tiny_lm import char_tokenizer
from frankenllama import cli
from frankenllama.export import ExportError, export_gguf, to_mergekit_yaml
from frankenllama.export.gguf import permute_rope
from frankenllama.export.mergekit import kept_ranges
from frankenllama.sublayer import prune_sublayers, sublayer_id
from frankenllama.surgery import drop_layers

PRE = "default"  # the char tokenizer's pre-tokenizer has no llama.cpp fingerprint


def _save(model, folder):
    model.save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def pico():
    return tiny_llama(4, vocab_size=96, bos_token_id=None, pad_token_id=1)


def _fields(path):
    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items()}, {t.name: t for t in reader.tensors}


def test_whole_block_pruned_is_llama_with_new_depth(pico, tmp_path):
    src = _save(drop_layers(pico, [1]), tmp_path / "m")
    summary = export_gguf(src, tmp_path / "m.gguf", "f32", pre_tokenizer=PRE)
    kv, tensors = _fields(tmp_path / "m.gguf")
    assert summary["arch"] == kv["general.architecture"] == "llama"
    assert kv["llama.block_count"] == 3 and kv["llama.attention.head_count"] == 4
    assert kv["llama.attention.head_count_kv"] == 2 and kv["llama.feed_forward_length"] == 64
    assert kv["general.pruning.original_block_count"] == 4 and kv["general.pruning.removed_blocks"] == [1]
    assert kv["tokenizer.ggml.model"] == "gpt2" and len(kv["tokenizer.ggml.tokens"]) == 96
    assert kv["tokenizer.chat_template"] == char_tokenizer().chat_template
    assert "output.weight" not in tensors  # tied embeddings: llama.cpp reuses token_embd
    assert len(tensors) == 2 + 3 * 9
    # ggml shapes are (in, out): attn_k projects 32 -> 2 kv heads x 8
    assert list(tensors["blk.0.attn_k.weight"].shape) == [32, 16]
    assert list(tensors["blk.2.ffn_down.weight"].shape) == [64, 32]
    # block 2 of the file is block 3 of the source, k rows permuted for llama.cpp's rope
    want = permute_rope(pico.model.layers[3].self_attn.k_proj.weight.detach(), 2).numpy()
    np.testing.assert_array_equal(np.asarray(tensors["blk.2.attn_k.weight"].data), want)


def test_permute_rope_pairs_the_halves_of_each_head():
    w = torch.arange(8.0).reshape(8, 1)  # 2 heads of dim 4: rows (0 1 | 2 3), (4 5 | 6 7)
    assert permute_rope(w, 2).flatten().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_sub_block_pruned_is_deci_with_per_layer_shapes(pico, tmp_path):
    pruned = prune_sublayers(pico, [sublayer_id(2, "attn"), sublayer_id(1, "mlp")])
    src = _save(pruned, tmp_path / "m")
    summary = export_gguf(src, tmp_path / "m.gguf", "q8_0", pre_tokenizer=PRE)
    kv, tensors = _fields(tmp_path / "m.gguf")
    assert summary["arch"] == kv["general.architecture"] == "deci"
    assert kv["deci.attention.head_count"] == [4, 4, 0, 4]
    assert kv["deci.attention.head_count_kv"] == [2, 2, 0, 2]
    assert kv["deci.feed_forward_length"] == [64, 1, 64, 64]  # removed MLP: a zero stub, never 0
    assert kv["general.pruning.removed_sublayers"] == ["1.mlp", "2.attn"]
    assert not any(name.startswith("blk.2.attn") for name in tensors)
    for part in ("gate", "up", "down", "norm"):
        assert not np.asarray(tensors[f"blk.1.ffn_{part}.weight"].data).any()
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_q4_0_keeps_the_tied_embedding_at_q8_0(pico, tmp_path):
    src = _save(pico, tmp_path / "m")
    export_gguf(src, tmp_path / "m.gguf", "q4_0", pre_tokenizer=PRE)
    kv, tensors = _fields(tmp_path / "m.gguf")
    assert kv["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q4_0
    assert tensors["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert tensors["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.Q4_0


def test_transformers_reads_back_the_same_logits(pico, tmp_path):
    from transformers import AutoModelForCausalLM

    pruned = drop_layers(pico, [2])
    src = _save(pruned, tmp_path / "m")
    ids = torch.randint(3, 96, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = pruned(ids).logits
    for qtype, tol in (("f32", 1e-5), ("f16", 2e-2)):
        export_gguf(src, tmp_path / f"{qtype}.gguf", qtype, pre_tokenizer=PRE)
        back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=f"{qtype}.gguf", dtype=torch.float32).eval()
        assert back.config.num_hidden_layers == 3
        with torch.no_grad():
            got = back(ids).logits
        assert (got - want).abs().max().item() <= tol * want.abs().max().item()


def test_refusals_write_nothing(pico, tmp_path):
    src = _save(pico, tmp_path / "m")
    with pytest.raises(ExportError, match="unknown qtype"):
        export_gguf(src, tmp_path / "a.gguf", "q3_k")
    with pytest.raises(ExportError, match="does not exist"):
        export_gguf(src, tmp_path / "missing" / "a.gguf", "f16")
    (tmp_path / "b.gguf").write_text("keep me")
    with pytest.raises(ExportError, match="force"):
        export_gguf(src, tmp_path / "b.gguf", "f16", pre_tokenizer=PRE)
    assert (tmp_path / "b.gguf").read_text() == "keep me"
    with pytest.raises(ExportError, match="pre-tokenizer"):
        export_gguf(src, tmp_path / "c.gguf", "f16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.gguf", "m"]


def test_block_zero_without_attention_is_refused(pico, tmp_path):
    src = _save(prune_sublayers(pico, [sublayer_id(0, "attn")]), tmp_path / "m")
    with pytest.raises(ExportError, match="layer 0"):
        export_gguf(src, tmp_path / "a.gguf", "f32", pre_tokenizer=PRE)
    assert not (tmp_path / "a.gguf").exists()


def test_non_llama_and_corrupt_sources_are_refused(pico, tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(ExportError, match="qwen2"):
        export_gguf(_save(qwen, tmp_path / "q"), tmp_path / "q.gguf", "f16")
    with pytest.raises(ExportError, match="config.json"):
        export_gguf(tmp_path, tmp_path / "e.gguf", "f16")
    src = _save(prune_sublayers(pico, [sublayer_id(1, "mlp")]), tmp_path / "m")
    weights = src / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ExportError, match="corrupt"):
        export_gguf(src, tmp_path / "m.gguf", "f16", pre_tokenizer=PRE)
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*tmp"))


def test_cli_exports_and_reports_bad_input_in_one_line(pico, tmp_path, capsys):
    src = _save(drop_layers(pico, [0]), tmp_path / "m")
    out = tmp_path / "m.gguf"
    args = ["export-gguf", str(src), str(out), "--qtype", "q8_0", "--pre-tokenizer", PRE]
    assert cli.main(args) == 0 and out.is_file()
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--force" in err and "exists" in err
    assert cli.main(args + ["--force"]) == 0
    with pytest.raises(SystemExit) as exit_:
        cli.main(["export-gguf", str(src), str(out), "--qtype", "q5_k"])
    assert exit_.value.code == 2


@pytest.mark.parametrize("removed, ranges", [
    ([13, 14, 15, 16, 17, 18], [(0, 13), (19, 30)]),
    ([0, 29], [(1, 29)]),
    ([], [(0, 30)]),
    ([3, 5, 7], [(0, 3), (4, 5), (6, 7), (8, 30)]),
])
def test_mergekit_yaml_keeps_exactly_the_kept_layers(removed, ranges):
    config = yaml.safe_load(to_mergekit_yaml("base", removed, 30))
    assert config["merge_method"] == "passthrough"
    got = [tuple(s["sources"][0]["layer_range"]) for s in config["slices"]]
    assert got == ranges == kept_ranges(removed, 30)
    kept = [i for start, end in got for i in range(start, end)]  # layer_range ends are exclusive (mergekit #360)
    assert kept == [i for i in range(30) if i not in removed]
    assert all(s["sources"][0]["model"] == "base" for s in config["slices"])


def test_mergekit_accepts_the_yaml():
    mergekit_config = pytest.importorskip("mergekit.config", reason="mergekit is not installed")
    config = mergekit_config.MergeConfiguration.model_validate(yaml.safe_load(to_mergekit_yaml("base", [13, 14], 30)))
    assert [tuple(s.sources[0].layer_range) for s in config.slices] == [(0, 13), (15, 30)]


def test_mergekit_yaml_refuses_bad_layers():
    with pytest.raises(ValueError, match="out of range"):
        to_mergekit_yaml("base", [30], 30)
    with pytest.raises(ValueError, match="all 30"):
        to_mergekit_yaml("base", range(30), 30)
