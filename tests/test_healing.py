"""Healing recipes on tiny in-process llamas (no downloads), plus one real-model check.

Invariants: LoRA moves only adapter weights; the merged model equals the adapter model; a killed
and resumed run ends bit-identical to an uninterrupted one; the linear patch is exact when the
removed block is linear in the previous MLP's output; every bad input is refused before anything
is written.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import random
import types
from pathlib import Path

import numpy as np

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaForCausalLM, PreTrainedTokenizerFast

from conftest import tiny_llama
from frankenllama.healing import (
    RECIPES,
    CheckpointFormatError,
    CheckpointMismatchError,
    HealConfig,
    LoraTargetError,
    PatchError,
    TeacherMismatchError,
    TeacherStreams,
    UnknownRecipeError,
    batch_indices,
    compare_recipes,
    gap_recovered,
    heal,
    linear_patch,
    recovery_table,
)
from frankenllama.healing.checkpoint import INDEX_FILE, LEGACY_FILE, decode, encode, rng_state, set_rng_state
from frankenllama.healing.loop import HeldOut
from frankenllama.healing.teacher import cached_teacher_targets, full_kl, sparse_kl, teacher_targets
from frankenllama.healing.trainer import RecipeTrainer
from frankenllama.healing.patch import patchable_layers
from frankenllama.models import decoder_layers
from frankenllama.sublayer import prune_sublayers
from frankenllama.surgery import drop_layers
from frankenllama.units import layer_units, sublayer_id

VOCAB = 128


def word_tokenizer(offset: int = 0) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``VOCAB`` tokens; ``offset`` shifts every id (a different vocabulary map)."""
    vocab = {f"t{i}": (i + offset) % VOCAB for i in range(VOCAB)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="t2", unk_token="t0")


@pytest.fixture(scope="module")
def setup():
    teacher = tiny_llama()
    student = drop_layers(teacher, [2])  # 3 blocks left, original ids [0, 1, 3]
    g = torch.Generator().manual_seed(1)
    train = torch.randint(0, VOCAB, (12, 16), generator=g)  # (N, T)
    evals = torch.randint(0, VOCAB, (4, 16), generator=g)
    return teacher, student, word_tokenizer(), train, evals


def params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


# ----------------------------------------------------------------------------- LoRA invariants
def test_lora_moves_only_adapters_and_merge_equals_adapter_model(setup):
    teacher, student, tok, train, evals = setup
    before = params(student)
    seen = {}

    def inspect(step, trainer):
        if step == trainer.total_steps:
            now = dict(trainer.model.named_parameters())
            seen["adapters"] = {n: p.detach().clone() for n, p in now.items() if "lora_" in n}
            seen["base"] = {n: p.detach().clone() for n, p in now.items() if "lora_" not in n}
            trainer.model.eval()
            seen["logits"] = logits(trainer.model, evals)

    config = HealConfig(recipe="lora", tokens=4 * 16 * 4, batch_size=4, lr=1e-2)
    result = heal(student, tok, config, train_blocks=train, progress=False, on_step=inspect)

    assert seen["adapters"], "no adapter weights found"
    moved_b = [n for n, p in seen["adapters"].items() if "lora_B" in n and p.abs().sum() > 0]
    assert moved_b, "lora_B started at zero and must have moved"
    for name, value in seen["base"].items():
        original = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(value, before[original]), f"frozen weight {original} changed"
    assert all(torch.equal(p, before[n]) for n, p in params(student).items()), "heal modified the caller's student"
    torch.testing.assert_close(logits(result.model, evals), seen["logits"], atol=1e-5, rtol=1e-5)
    assert not any("lora" in n for n, _ in result.model.named_parameters()), "merged model still has adapters"
    assert type(result.model) is LlamaForCausalLM


# ----------------------------------------------------------------------------- resume
@pytest.mark.parametrize(
    "recipe,extra",
    [("lora", {"lora_dropout": 0.2}), ("kd-full", {"hidden_weight": 0.5, "kd_top_k": 0}), ("kd-lora", {"kd_top_k": 8}),
     ("partial", {"partial_train_head": True})],
)
def test_killed_run_resumes_to_the_uninterrupted_result(setup, tmp_path, recipe, extra):
    teacher, student, tok, train, evals = setup
    config = HealConfig(recipe=recipe, tokens=6 * 2 * 16, batch_size=2, checkpoint_every=2, eval_every=2, **extra)
    kwargs = dict(train_blocks=train, teacher=teacher, eval_blocks=evals, progress=False)
    full = heal(student, tok, config, **kwargs)

    out = tmp_path / "healed"

    def kill(step, trainer):
        if step == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        heal(student, tok, config, out_dir=out, on_step=kill, **kwargs)
    assert not out.exists(), "a killed run must leave no output folder"
    resumed = heal(student, tok, config, out_dir=out, **kwargs)
    assert resumed.resumed_from_step == 2
    for (n, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), f"{n} differs after resume"
    assert [r["loss"] for r in full.losses] == [r["loss"] for r in resumed.losses]
    assert full.curve == resumed.curve
    # the saved folder is a plain transformers model that reloads to the same weights, and a cache hit
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    torch.testing.assert_close(logits(reloaded, evals), logits(full.model, evals))
    assert heal(student, tok, config, out_dir=out, **kwargs).cached
    record = heal(student, tok, config, out_dir=out, load_cached=False, **kwargs)  # the record, weights left on disk
    assert record.cached and record.model is None and record.losses == resumed.losses
    assert not (tmp_path / ".healed.checkpoints").exists(), "checkpoints are removed after the final save"


def test_checkpoint_is_safetensors_and_json_only(setup, tmp_path):
    teacher, student, tok, train, _ = setup
    config = HealConfig(recipe="lora", tokens=4 * 2 * 16, batch_size=2, checkpoint_every=1)

    def kill(step, trainer):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        heal(student, tok, config, train_blocks=train, out_dir=tmp_path / "m", on_step=kill, progress=False)
    folder = tmp_path / ".m.checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [INDEX_FILE, "losses.csv", "tensors-00000003.safetensors"]
    index = json.loads((folder / INDEX_FILE).read_text())
    assert index["step"] == 3 and len(index["state"]["losses"]) == 3


def test_checkpoint_encoding_round_trips_optimizer_and_rng_state_exactly():
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    random.random(), np.random.rand(), torch.rand(1)
    state = {"optimizer": opt.state_dict(), "rng": rng_state(), "curve": [{"step": 1, "ppl": 1 / 3}]}
    tensors: dict[str, torch.Tensor] = {}
    back = decode(json.loads(json.dumps(encode(state, tensors))), tensors)
    assert back["curve"] == state["curve"] and back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert back["optimizer"]["state"].keys() == state["optimizer"]["state"].keys()  # int keys stay ints
    for pid, moments in state["optimizer"]["state"].items():
        assert all(torch.equal(back["optimizer"]["state"][pid][k], v) for k, v in moments.items())
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(back["rng"])  # rewinds every generator to the saved point
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    with pytest.raises(TypeError, match="cannot hold a set"):
        encode({"bad": {1, 2}}, {})


class _Payload:
    """A pickle that creates ``marker`` when unpickled: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("where", [LEGACY_FILE, INDEX_FILE, "tensors"])
def test_checkpoint_with_a_pickle_payload_is_refused_without_running_it(setup, tmp_path, where):
    teacher, student, tok, train, _ = setup
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe)))
    assert probe.exists(), "the payload must be live: unpickling it creates its marker"
    marker, out, folder = tmp_path / "pwned", tmp_path / "m", tmp_path / ".m.checkpoints"
    config = HealConfig(recipe="lora", tokens=4 * 2 * 16, batch_size=2, checkpoint_every=1)
    if where == "tensors":  # a genuine checkpoint whose tensor file is swapped for the payload

        def kill(step, trainer):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            heal(student, tok, config, train_blocks=train, out_dir=out, on_step=kill, progress=False)
        target = next(folder.glob("tensors-*.safetensors"))
    else:
        folder.mkdir()
        target = folder / where
    torch.save({"trainer": _Payload(marker)}, target) if where != INDEX_FILE else target.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointFormatError, match="was not loaded"):
        heal(student, tok, config, train_blocks=train, out_dir=out, progress=False)
    assert not marker.exists(), "loading the checkpoint ran the pickled code"
    assert not out.exists()


# ----------------------------------------------------------------------------- distillation targets
def test_sparse_kl_is_the_full_kl_over_all_tokens_and_a_lower_bound_below():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, VOCAB, generator=g), 2 * torch.randn(2, 5, VOCAB, generator=g)
    full = full_kl(torch.log_softmax(student / 2.0, -1), teacher, 2.0)
    for k, check in ((VOCAB, "equal"), (16, "below"), (1, "below")):
        logp = torch.log_softmax(teacher / 2.0, -1).topk(k, -1)
        sparse = sparse_kl(torch.log_softmax(student / 2.0, -1), logp.indices, logp.values)
        if check == "equal":
            torch.testing.assert_close(sparse, full, atol=1e-5, rtol=1e-5)
        else:
            assert 0 <= float(sparse) < float(full)
    same = torch.log_softmax(student / 2.0, -1).topk(16, -1)
    assert abs(float(sparse_kl(torch.log_softmax(student / 2.0, -1), same.indices, same.values))) < 1e-5


def test_teacher_targets_are_cached_and_reused(setup, tmp_path):
    teacher, _, _, train, _ = setup
    first, computed = cached_teacher_targets(teacher, train[:5], 2.0, 8, "digest", "blocks", batch_size=2, root=tmp_path)
    again, recomputed = cached_teacher_targets(teacher, train[:5], 2.0, 8, "digest", "blocks", batch_size=2, root=tmp_path)
    assert computed and not recomputed
    assert torch.equal(first.indices, again.indices) and torch.equal(first.logp, again.logp)
    direct = torch.log_softmax(logits(teacher, train[:5])[:, :-1] / 2.0, -1).topk(8, -1)
    assert torch.equal(first.indices, direct.indices)
    torch.testing.assert_close(first.logp, direct.values)
    assert 0 < first.tail_mass() < 1


def test_kd_with_cached_targets_pulls_the_student_to_the_teacher(setup):
    teacher, student, tok, train, _ = setup
    far = copy.deepcopy(student)
    with torch.no_grad():
        far.model.norm.weight.mul_(8.0)  # a much sharper, wrong next-token distribution
    config = HealConfig(recipe="kd-full", tokens=6 * 4 * 16, batch_size=4, lr=1e-2, kd_top_k=16, kd_weight=1.0)
    result = heal(far, tok, config, train_blocks=train, teacher=teacher, progress=False)
    before = full_kl(torch.log_softmax(logits(far, train) / 2.0, -1), logits(teacher, train), 2.0)
    after = full_kl(torch.log_softmax(logits(result.model, train) / 2.0, -1), logits(teacher, train), 2.0)
    assert result.teacher_tail_mass is not None and float(after) < 0.5 * float(before)


def test_batch_order_is_a_pure_function_of_seed_and_step():
    a = torch.cat([batch_indices(s, 3, 7, seed=5) for s in range(7)])
    assert sorted(a.tolist()) == sorted(list(range(7)) * 3)  # 21 draws = 3 epochs of 7 blocks
    assert torch.equal(batch_indices(4, 3, 7, seed=5), batch_indices(4, 3, 7, seed=5))


# ----------------------------------------------------------------------------- linear patch
def linear_block_setup():
    """A teacher whose removed block 1 adds ``M_0 B`` (B fixed) — linear in block 0's MLP output.

    Block 0 writes attention and embeddings only into the first half of the residual and its MLP
    only into the second half, so ``h P = M_0`` for the projector P on the second half. Block 1 is
    replaced by ``h ↦ h + (h P) B``; the ReplaceMe target ``L − Y = M_0 (I + B)`` is then exactly
    linear in ``M_0`` and the fitted patch must reproduce the teacher to float precision.
    """
    teacher = tiny_llama(num_layers=4)
    d = teacher.config.hidden_size
    half = d // 2
    with torch.no_grad():
        teacher.model.embed_tokens.weight[:, half:] = 0  # the tied head reads only the first half …
        teacher.lm_head.weight.copy_(teacher.model.embed_tokens.weight)
        blk0 = decoder_layers(teacher)[0]
        blk0.self_attn.o_proj.weight[half:, :] = 0
        blk0.mlp.down_proj.weight[:half, :] = 0
    mix = torch.randn(d, d, generator=torch.Generator().manual_seed(3)) * 0.3  # B

    def linear_forward(self, hidden_states, *args, **kwargs):
        m = torch.zeros_like(hidden_states)
        m[..., half:] = hidden_states[..., half:]  # h P = M_0
        return hidden_states + m @ mix.to(m.device, m.dtype)

    decoder_layers(teacher)[1].forward = types.MethodType(linear_forward, decoder_layers(teacher)[1])
    return teacher


def test_linear_patch_is_exact_for_a_linear_removed_block():
    teacher = linear_block_setup()
    student = drop_layers(teacher, [1])
    calib = torch.randint(0, VOCAB, (8, 16), generator=torch.Generator().manual_seed(4))
    test = torch.randint(0, VOCAB, (4, 16), generator=torch.Generator().manual_seed(5))
    unpatched_gap = (logits(student, test) - logits(teacher, test)).abs().max()
    fits = linear_patch(student, teacher, calib)
    assert len(fits) == 1 and fits[0].removed == (1,) and fits[0].student_layer == 0
    assert fits[0].rel_error < 1e-8 < fits[0].rel_error_identity
    assert unpatched_gap > 1e-2
    torch.testing.assert_close(logits(student, test), logits(teacher, test), atol=1e-4, rtol=1e-4)
    assert type(student) is LlamaForCausalLM and len(decoder_layers(student)) == 3


def test_linear_patch_folds_into_the_attention_when_the_block_before_the_cut_lost_its_mlp():
    """Block 0 keeps only its attention (output ``A_0``, second half of the stream); removed block 1 adds ``A_0 B``."""
    teacher = tiny_llama(num_layers=4)
    d = teacher.config.hidden_size
    half = d // 2
    with torch.no_grad():
        teacher.model.embed_tokens.weight[:, half:] = 0
        teacher.lm_head.weight.copy_(teacher.model.embed_tokens.weight)
        blk0 = decoder_layers(teacher)[0]
        blk0.self_attn.o_proj.weight[:half, :] = 0  # the attention writes only the second half: h P = A_0
        blk0.mlp.down_proj.weight.zero_()  # an MLP that adds nothing: removing it changes nothing
    mix = torch.randn(d, d, generator=torch.Generator().manual_seed(7)) * 0.3

    def linear_forward(self, hidden_states, *args, **kwargs):
        a = torch.zeros_like(hidden_states)
        a[..., half:] = hidden_states[..., half:]
        return hidden_states + a @ mix.to(a.device, a.dtype)

    decoder_layers(teacher)[1].forward = types.MethodType(linear_forward, decoder_layers(teacher)[1])
    student = prune_sublayers(teacher, [sublayer_id(0, "mlp"), *layer_units([1])])
    assert patchable_layers(student) == (1,)
    test = torch.randint(0, VOCAB, (4, 16), generator=torch.Generator().manual_seed(5))
    down_before = decoder_layers(student)[0].self_attn.o_proj.weight.clone()
    assert (logits(student, test) - logits(teacher, test)).abs().max() > 1e-2
    fits = linear_patch(student, teacher, torch.randint(0, VOCAB, (8, 16), generator=torch.Generator().manual_seed(4)))
    assert len(fits) == 1 and fits[0].removed == (1,) and fits[0].student_layer == 0
    assert fits[0].rel_error < 1e-8 < fits[0].rel_error_identity
    assert not torch.equal(decoder_layers(student)[0].self_attn.o_proj.weight, down_before)
    torch.testing.assert_close(logits(student, test), logits(teacher, test), atol=1e-4, rtol=1e-4)


def test_linear_patch_is_identity_when_the_removed_block_does_nothing():
    teacher = tiny_llama(num_layers=4)
    with torch.no_grad():  # block 2 adds zero: removing it changes nothing, and T = I is optimal
        decoder_layers(teacher)[2].self_attn.o_proj.weight.zero_()
        decoder_layers(teacher)[2].mlp.down_proj.weight.zero_()
    student = drop_layers(teacher, [2])
    before = decoder_layers(student)[1].mlp.down_proj.weight.clone()
    linear_patch(student, teacher, torch.randint(0, VOCAB, (8, 16)))
    torch.testing.assert_close(decoder_layers(student)[1].mlp.down_proj.weight, before, atol=1e-4, rtol=1e-4)


def test_patching_two_runs_never_fits_worse_than_plain_removal():
    teacher = tiny_llama(num_layers=6)
    student = drop_layers(teacher, [1, 3])  # runs (1,) and (3,); the second is fitted on the patched student
    fits = linear_patch(student, teacher, torch.randint(0, VOCAB, (16, 16), generator=torch.Generator().manual_seed(6)))
    assert [f.removed for f in fits] == [(1,), (3,)] and [f.student_layer for f in fits] == [0, 1]
    assert all(f.rel_error <= f.rel_error_identity + 1e-9 for f in fits)


def test_one_teacher_pass_for_every_run_gives_the_same_patch(monkeypatch):
    from frankenllama.healing import patch

    teacher = tiny_llama(num_layers=8, seed=3)
    blocks = torch.randint(3, VOCAB, (12, 32), generator=torch.Generator().manual_seed(0))
    shared, per_run = drop_layers(teacher, [2, 3, 5, 6]), drop_layers(teacher, [2, 3, 5, 6])
    fits = linear_patch(shared, teacher, blocks, batch_size=4)  # two runs: the teacher's targets of both in one pass
    monkeypatch.setattr(patch, "TARGETS_IN_MEMORY", 0)  # no room: one teacher pass per run
    assert linear_patch(per_run, teacher, blocks, batch_size=4) == fits and len(fits) == 2
    for (name, a), (_, b) in zip(shared.named_parameters(), per_run.named_parameters(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("attention", [False, True])
def test_reading_the_first_fit_from_the_teacher_gives_the_same_patch(monkeypatch, attention):
    """While the student's prefix is the teacher's (and, for an attention fold, block p's attention half),
    Y and M come from the teacher's pass: the same patch as reading them from the student's own pass."""
    from frankenllama.healing import patch

    teacher = tiny_llama(num_layers=8, seed=4)
    blocks = torch.randint(3, VOCAB, (12, 32), generator=torch.Generator().manual_seed(1))
    units = [*([sublayer_id(2, "mlp")] if attention else []), *layer_units([3, 4, 6])]
    fast, slow = prune_sublayers(teacher, units), prune_sublayers(teacher, units)
    assert patch._same_prefix(fast, teacher, 2, via_attention=attention)
    assert attention != patch._same_prefix(fast, teacher, 2)  # a whole block 2 is the teacher's only without the cut MLP
    fits = linear_patch(fast, teacher, blocks, batch_size=4)
    assert not patch._same_prefix(fast, teacher, 2, via_attention=attention)  # the fold made block 2 the student's own
    monkeypatch.setattr(patch, "_same_prefix", lambda *args, **kw: False)  # every fit reads the student
    assert linear_patch(slow, teacher, blocks, batch_size=4) == fits and len(fits) == 2
    for (name, a), (_, b) in zip(fast.named_parameters(), slow.named_parameters(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("attention", [False, True])
def test_fits_sharing_the_teachers_streams_give_the_same_patches_from_one_teacher_pass(attention):
    """Several cuts fitted with one ``TeacherStreams``: bit-identical to fitting each alone, and the teacher
    runs over the calibration blocks once in all (block p alone on the stored stream gives Y and M)."""
    teacher = tiny_llama(num_layers=8, seed=5)
    blocks = torch.randint(3, VOCAB, (12, 32), generator=torch.Generator().manual_seed(2))
    cuts = [[*([sublayer_id(2, "mlp")] if attention else []), *layer_units([3, 4, 6])], layer_units([5]), layer_units([1, 2])]
    passes = []
    handle = teacher.model.register_forward_pre_hook(
        lambda module, args, kwargs: passes.append(module is teacher.model and kwargs.get("input_ids") is not None),
        with_kwargs=True)  # the pruned copies carry the hook too: count the teacher's own passes
    streams, full = TeacherStreams(), 0
    try:
        for units in cuts:
            alone, shared = prune_sublayers(teacher, units), prune_sublayers(teacher, units)
            fits = linear_patch(alone, teacher, blocks, batch_size=4)
            before = len(passes)
            assert linear_patch(shared, teacher, blocks, batch_size=4, streams=streams) == fits
            full += sum(passes[before:])
            for (name, a), (_, b) in zip(alone.named_parameters(), shared.named_parameters(), strict=True):
                assert torch.equal(a, b), name
        assert full == 3 and streams.credit_s > 0  # one pass over the 3 calibration batches, for every fit
        other = blocks.flip(0)  # other calibration blocks: new streams, still the same patch
        alone, shared = drop_layers(teacher, [4]), drop_layers(teacher, [4])
        assert linear_patch(shared, teacher, other, batch_size=4, streams=streams) == linear_patch(alone, teacher, other, batch_size=4)
        tight = drop_layers(teacher, [4])  # streams over the limit: the fit runs the teacher itself
        assert TeacherStreams(limit=0).get(teacher, blocks, 4) is None
        assert linear_patch(tight, teacher, blocks, batch_size=4, streams=TeacherStreams(limit=0)) == linear_patch(
            drop_layers(teacher, [4]), teacher, blocks, batch_size=4)
    finally:
        handle.remove()


def test_the_ridge_pulls_the_patch_towards_plain_removal():
    """ridge 0 is least squares; a growing ridge moves the fit towards T = I (no patch) and never below its error."""
    teacher = tiny_llama(num_layers=6, seed=7)
    blocks = torch.randint(3, VOCAB, (8, 32), generator=torch.Generator().manual_seed(3))
    errors = []
    for ridge in (0.0, 0.1, 1e9):
        student = drop_layers(teacher, [3])
        plain = {n: w.clone() for n, w in student.named_parameters()}
        (fit,) = linear_patch(student, teacher, blocks, ridge=ridge)
        errors.append(fit.rel_error)
        changed = [n for n, w in student.named_parameters() if not torch.equal(w, plain[n])]
        assert changed == ["model.layers.2.mlp.down_proj.weight"]
        if ridge > 1e6:  # T = I up to 1e-9: the block before the cut is left as it was
            torch.testing.assert_close(dict(student.named_parameters())[changed[0]], plain[changed[0]], rtol=0, atol=1e-6)
    assert errors[0] < errors[1] < errors[2] and errors[2] == pytest.approx(fit.rel_error_identity, rel=1e-6)


def test_patch_then_heal_composes(setup):
    teacher, student, tok, train, evals = setup
    config = HealConfig(recipe="linear-patch+lora", tokens=2 * 16 * 2, batch_size=2, patch_tokens=64)
    result = heal(student, tok, config, train_blocks=train, teacher=teacher, eval_blocks=evals, progress=False)
    assert result.calib_tokens == 64 and result.tokens_seen == 64 and len(result.patch_fits) == 1
    assert result.curve[0]["tokens"] == 0 and result.curve[0]["ppl"] != result.ppl_before  # patched start


# ----------------------------------------------------------------------------- every recipe runs
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_reports_its_cost(setup, tmp_path, recipe):
    teacher, student, tok, train, evals = setup
    config = HealConfig(recipe=recipe, tokens=2 * 16 * 2, batch_size=2, patch_tokens=64)
    result = heal(student, tok, config, train_blocks=train, teacher=teacher, eval_blocks=evals, out_dir=tmp_path / "m", progress=False)
    trains = RECIPES[recipe].trains
    assert result.tokens_seen == (64 if trains else 0) and result.steps == (2 if trains else 0)
    assert result.wall_time_s > 0 and (result.tokens_per_s > 0) == trains
    assert {"config.json", "frankenllama.json", "losses.csv", "eval.csv", "tokenizer.json"} <= {p.name for p in (tmp_path / "m").iterdir()}
    table = recovery_table([result], reference_ppl=result.ppl_after * 0.5)
    assert list(table["recipe"]) == [recipe]


def test_recipes_compared_share_one_measurement_of_the_student_and_match_separate_runs(setup, monkeypatch):
    teacher, student, tok, train, evals = setup
    base = HealConfig(recipe="lora", tokens=2 * 16 * 2, batch_size=2, patch_tokens=64)
    recipes = ("lora", "linear-patch")
    alone = [heal(student, tok, dataclasses.replace(base, recipe=r), train_blocks=train, teacher=teacher,
                  eval_blocks=evals, ood_blocks=evals.flip(1), progress=False) for r in recipes]  # fmt: skip
    measured = []
    nll = HeldOut.nll
    monkeypatch.setattr(HeldOut, "nll", lambda self, model: measured.append(model) or nll(self, model))
    shared = compare_recipes(student, tok, recipes, base, teacher=teacher, train_blocks=train, eval_blocks=evals,
                             ood_blocks=evals.flip(1), variant_prefix=None, progress=False)  # fmt: skip
    assert sum(m is student for m in measured) == 1  # the unhealed student once, not once per recipe
    for a, b in zip(alone, shared):
        assert (a.ppl_before, a.ppl_before_ood, a.ppl_after, a.ppl_after_ood) == (b.ppl_before, b.ppl_before_ood, b.ppl_after, b.ppl_after_ood)
        assert a.block_nll == b.block_nll and a.curve == b.curve


def test_partial_trains_only_the_blocks_next_to_the_cut(setup):
    teacher, student, tok, train, evals = setup  # student blocks hold original [0, 1, 3]; cut at 2
    big = drop_layers(tiny_llama(num_layers=6), [3])  # original [0,1,2,4,5]: neighbours of the cut are 2 and 4
    before = params(big)
    result = heal(big, tok, HealConfig(recipe="partial", tokens=64, batch_size=2, lr=1e-2), train_blocks=train, progress=False)
    changed = {n.split(".")[2] for n, p in params(result.model).items() if not torch.equal(p, before[n]) and ".layers." in n}
    assert changed == {"2", "3"}  # student indices of original blocks 2 and 4
    assert torch.equal(result.model.model.embed_tokens.weight, before["model.embed_tokens.weight"])


def test_gap_recovered():
    assert gap_recovered(20.0, 15.0, 10.0) == pytest.approx(50.0)
    assert gap_recovered(20.0, 10.0, 10.0) == pytest.approx(100.0)


# ----------------------------------------------------------------------------- bad input
def test_unknown_recipe_and_bad_compositions():
    with pytest.raises(UnknownRecipeError, match="unknown healing recipe 'qlora'"):
        HealConfig(recipe="qlora")
    with pytest.raises(UnknownRecipeError, match="patch must come first"):
        HealConfig(recipe="lora+linear-patch")
    with pytest.raises(UnknownRecipeError, match="more than one trained"):
        HealConfig(recipe="lora+partial")
    with pytest.raises(ValueError, match="set kd_top_k=0"):
        HealConfig(recipe="kd-lora", hidden_weight=0.5)
    with pytest.raises(ValueError, match="kd_top_k must be >= 0"):
        HealConfig(recipe="kd-lora", kd_top_k=-1)


def test_zero_token_budget_is_refused(setup):
    with pytest.raises(ValueError, match="token budget must be positive"):
        HealConfig(tokens=0)
    teacher, student, tok, train, _ = setup
    with pytest.raises(ValueError, match="less than one step"):
        heal(student, tok, HealConfig(tokens=10, batch_size=4), train_blocks=train, progress=False)


def test_missing_lora_targets_are_refused(setup, tmp_path):
    teacher, student, tok, train, _ = setup
    config = HealConfig(recipe="lora", tokens=64, batch_size=2, lora_targets=("q_proj", "c_attn"))
    with pytest.raises(LoraTargetError, match=r"\['c_attn'\] do not exist"):
        heal(student, tok, config, train_blocks=train, out_dir=tmp_path / "m", progress=False)
    assert not any(tmp_path.iterdir())


def test_teacher_with_another_vocabulary_is_refused(setup, tmp_path):
    teacher, student, tok, train, _ = setup
    config = HealConfig(recipe="kd-lora", tokens=64, batch_size=2)
    other = tiny_llama(vocab_size=VOCAB + 8)
    with pytest.raises(TeacherMismatchError, match="vocabulary"):
        heal(student, tok, config, train_blocks=train, teacher=other, out_dir=tmp_path / "m", progress=False)
    with pytest.raises(TeacherMismatchError, match="tokenizers map tokens to different ids"):
        heal(student, tok, config, train_blocks=train, teacher=teacher, teacher_tokenizer=word_tokenizer(offset=3),
             out_dir=tmp_path / "m", progress=False)  # fmt: skip
    assert not any(tmp_path.iterdir())


def test_checkpoint_of_another_configuration_is_refused(setup, tmp_path):
    teacher, student, tok, train, _ = setup
    out = tmp_path / "m"
    config = HealConfig(recipe="lora", tokens=4 * 2 * 16, batch_size=2, checkpoint_every=1)

    def kill(step, trainer):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        heal(student, tok, config, train_blocks=train, out_dir=out, on_step=kill, progress=False)
    other = HealConfig(recipe="lora", tokens=4 * 2 * 16, batch_size=2, checkpoint_every=1, lr=5e-4)
    with pytest.raises(CheckpointMismatchError, match="refusing to resume"):
        heal(student, tok, other, train_blocks=train, out_dir=out, progress=False)
    with pytest.raises(CheckpointMismatchError):  # other data, same config
        heal(student, tok, config, train_blocks=train.flip(0), out_dir=out, progress=False)
    assert not out.exists()


def test_patch_of_layers_that_were_not_removed_is_refused(setup, tmp_path):
    teacher, student, tok, train, _ = setup  # removed: [2]
    config = HealConfig(recipe="linear-patch", patch_layers=(1, 2))
    with pytest.raises(PatchError, match=r"layers \[1\], which were not removed"):
        heal(student, tok, config, train_blocks=train, teacher=teacher, out_dir=tmp_path / "m", progress=False)
    with pytest.raises(PatchError, match="starts at block 0"):
        linear_patch(drop_layers(teacher, [0]), teacher, train)
    with pytest.raises(PatchError, match="must be the unpruned model"):
        linear_patch(student, drop_layers(teacher, [3]), train)
    with pytest.raises(PatchError, match="splits the removed run"):
        linear_patch(drop_layers(teacher, [1, 2]), teacher, train, layers=(2,))
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- real model
@pytest.mark.integration
def test_lora_and_patch_lower_eval_perplexity_of_pruned_smollm2(smollm2, eval_blocks, tmp_path):
    """On SmolLM2-135M minus blocks 13–18: a few LoRA steps and the linear patch both lower held-out PPL."""
    from frankenllama.data import load_corpus, token_blocks

    model, tok = smollm2
    train = token_blocks(tok, load_corpus("wiki-leads", "train"), 128, max_blocks=24)
    calib = token_blocks(tok, load_corpus("wiki-leads", "calib"), 128, max_blocks=32)
    student = drop_layers(model, list(range(13, 19)))
    config = HealConfig(recipe="lora", tokens=6 * 4 * 128, batch_size=4, lr=2e-3)
    result = heal(student, tok, config, train_blocks=train, eval_blocks=eval_blocks, out_dir=tmp_path / "m", progress=False)
    assert result.ppl_after < result.ppl_before
    assert result.losses[-1]["ce"] < result.losses[0]["ce"]
    assert (tmp_path / "m" / "model.safetensors").exists()
    patched = heal(student, tok, HealConfig(recipe="linear-patch"), teacher=model, calib_blocks=calib,
                   eval_blocks=eval_blocks, progress=False)  # fmt: skip
    assert patched.ppl_after < patched.ppl_before


@pytest.mark.parametrize("recipe, extra", [("lora", {}), ("kd-lora", {}), ("kd-lora", {"kd_temperature": 2.0}),
                                           ("kd-lora", {"kd_weight": 1.0}), ("kd-lora", {"kd_top_k": 0})])
def test_step_loss_and_gradients_are_the_textbook_formula(setup, recipe, extra):
    """RecipeTrainer.loss (head on T-1 positions, one gather for the CE and the top-k) against the plain
    formula on the full logits: nll_loss + kd_weight·T²·KL of the teacher's top-k (or full) distribution."""
    teacher, student, _, train, _ = setup
    config = HealConfig(recipe=recipe, tokens=64, batch_size=4, **extra)
    trainer = RecipeTrainer(copy.deepcopy(student), config, total_steps=1, teacher=teacher)
    ids = train[:4]
    temp, k = config.kd_temperature, config.kd_top_k
    targets = teacher_targets(teacher, ids, temp, k).rows(torch.arange(len(ids))) if k else None
    loss, parts = trainer.loss(ids, targets if config.trained_recipe.distill else None)
    loss.backward()
    got = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.model.zero_grad()

    logits = trainer.model(input_ids=ids).logits[:, :-1].float()
    log_p = torch.log_softmax(logits, -1)
    ce = torch.nn.functional.nll_loss(log_p.reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    if not config.trained_recipe.distill:
        want = ce
    else:
        log_p_t = torch.log_softmax(logits / temp, -1)
        with torch.no_grad():
            t_logits = teacher(input_ids=ids).logits[:, :-1]
        kl = sparse_kl(log_p_t, *targets) if k else full_kl(log_p_t, t_logits, temp)
        want = (1 - config.kd_weight) * ce + config.kd_weight * temp**2 * kl
        assert parts["kd"] == pytest.approx(float(kl.detach()), rel=1e-5, abs=1e-6)
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    want.backward()
    assert got and all(torch.allclose(got[n], p.grad, rtol=1e-4, atol=1e-6) for n, p in trainer.model.named_parameters()
                       if p.requires_grad)
