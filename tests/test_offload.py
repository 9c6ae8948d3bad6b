"""Memory-lean scoring: the similarity pass, the ablation scan and the cached searches on a model
spread and offloaded by accelerate (``device_map`` with blocks on "cpu" and on "disk", and
``cpu_offload``), and with the cached residual streams held on CPU or on disk, give the results of
the plain in-memory run (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate import cpu_offload
from transformers import AutoModelForCausalLM

from conftest import tiny_llama
from frankenllama.models import execution_device, is_offloaded, model_device
from frankenllama.scoring import SelectionContext, ablation_scan, greedy_removal, part_swap_search, swap_search
from frankenllama.scoring.measures import taylor_scores
from frankenllama.scoring.trunk import Trunk
from frankenllama.similarity import layer_similarity
from frankenllama.streams import StreamStore
from frankenllama.units import layer_units

L = 6


@pytest.fixture(scope="module")
def plain() -> torch.nn.Module:
    return tiny_llama(L, seed=3)


@pytest.fixture(scope="module")
def calib() -> torch.Tensor:
    return torch.randint(3, 128, (6, 24), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def dispatched(plain, tmp_path_factory) -> torch.nn.Module:
    """The same weights loaded with ``device_map``: blocks 1, 2 and 4 offloaded to disk, the rest on the CPU."""
    folder = tmp_path_factory.mktemp("tiny")
    plain.save_pretrained(folder)
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    device_map |= {f"model.layers.{i}": "disk" if i in (1, 2, 4) else "cpu" for i in range(L)}
    model = AutoModelForCausalLM.from_pretrained(folder, device_map=device_map, offload_folder=folder / "offload",
                                                 dtype=torch.float32).eval()  # fmt: skip
    assert is_offloaded(model) and model.model.layers[1].self_attn.q_proj.weight.device.type == "meta"
    return model


@pytest.fixture(scope="module")
def cpu_offloaded(tmp_path_factory) -> torch.nn.Module:
    """Every weight on 'meta', kept in a CPU map and loaded block by block (``accelerate.cpu_offload``)."""
    return cpu_offload(tiny_llama(L, seed=3), execution_device=torch.device("cpu"))


def _close(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_devices_follow_accelerate_hooks(dispatched, cpu_offloaded) -> None:
    assert model_device(dispatched) == torch.device("cpu")
    assert execution_device(cpu_offloaded.model.layers[0]) == torch.device("cpu")
    assert is_offloaded(cpu_offloaded)
    with pytest.raises(ValueError, match="offloaded"):
        taylor_scores(dispatched, torch.randint(0, 128, (2, 8)))


@pytest.mark.parametrize("store", ["device", "cpu", "disk"])
def test_stream_store_round_trip(store, tmp_path) -> None:
    s = StreamStore(store, tmp_path)
    x = torch.randn(2, 5, 3, dtype=torch.bfloat16)
    s[0][1] = x
    assert torch.equal(s[0][1], x) and torch.equal(s.get((0, 1), slice(1, 4)), x[:, 1:4])
    s.drop((0, 1))
    assert (0, 1) not in s
    s.close()
    with pytest.raises(ValueError, match="stream_store must be one of"):
        StreamStore("gpu")


@pytest.mark.parametrize("store", ["cpu", "disk"])
def test_similarity_offloaded_and_streams_elsewhere(plain, dispatched, calib, store) -> None:
    ref = layer_similarity(plain, calib, batch_size=4)
    for model in (plain, dispatched):
        got = layer_similarity(model, calib, batch_size=4, stream_store=store)
        for field in ("cosine", "angular_all", "angular_last"):
            _close(getattr(got, field), getattr(ref, field))


@pytest.mark.parametrize("granularity", ["layer", "sublayer"])
def test_ablation_scan_offloaded(plain, dispatched, cpu_offloaded, calib, granularity) -> None:
    ref = ablation_scan(plain, calib, granularity, batch_size=4)
    for model, store in ((dispatched, "disk"), (cpu_offloaded, "cpu"), (plain, "disk")):
        got = ablation_scan(model, calib, granularity, batch_size=4, stream_store=store)
        for field in ("base_nll", "nll", "cos", "ang_all", "ang_last"):
            _close(getattr(got, field), getattr(ref, field))
        if granularity == "layer":
            _close(got.kl, ref.kl)


def test_searches_offloaded(plain, dispatched, cpu_offloaded, calib) -> None:
    """Greedy (bounded: the LM-head shortlist, read through the hook where the head is offloaded too), swap, part-swap."""
    for granularity, model in (("layer", dispatched), ("sublayer", dispatched), ("layer", cpu_offloaded)):
        ref = greedy_removal(plain, calib, 2, granularity, batch_size=4, bound_vocab=32)
        got = greedy_removal(model, calib, 2, granularity, batch_size=4, bound_vocab=32, stream_store="disk")
        assert got.order == ref.order and got.evaluated == ref.evaluated and got.abandoned == ref.abandoned
        _close(np.array(got.nll), np.array(ref.nll))
    ref = swap_search(plain, calib, [0, 5], batch_size=4, max_rounds=2)
    got = swap_search(dispatched, calib, [0, 5], batch_size=4, max_rounds=2, stream_store="cpu")
    assert (got.removed, got.swaps) == (ref.removed, ref.swaps) and got.nll == pytest.approx(ref.nll, rel=1e-6)
    cost = ablation_scan(plain, calib, "sublayer", batch_size=4).delta_nll()
    ref = part_swap_search(plain, calib, layer_units([1, 3]), cost, width=2, batch_size=4, max_rounds=1)
    got = part_swap_search(dispatched, calib, layer_units([1, 3]), cost, width=2, batch_size=4, max_rounds=1, stream_store="disk")
    assert (got.removed, got.swaps) == (ref.removed, ref.swaps) and got.nll == pytest.approx(ref.nll, rel=1e-6)


def test_bounded_total_nll_with_disk_streams(plain, calib) -> None:
    """The bounded evaluation (lower bound, then the exact head) keeps its final streams on disk and agrees."""
    a, b = Trunk(plain, calib, 4, bound_vocab=16), Trunk(plain, calib, 4, bound_vocab=16, stream_store="disk")
    mask = np.zeros((L, 2), dtype=bool)
    a.refresh(mask)
    b.refresh(mask)
    exact = a.candidate_nll(2, "layer")
    got = b.candidate_nll(2, "layer", bound=float(exact.sum()) * 2)
    torch.testing.assert_close(got, exact)
    assert b.candidate_nll(2, "layer", bound=float(exact.sum()) / 2) is None
    assert b.states._data and not any(isinstance(v, torch.Tensor) for v in b.states._data.values())  # all on disk


def test_selection_context_stream_store(plain, dispatched, calib) -> None:
    """Scores and the greedy strategy read the same from a context on the offloaded model with disk streams."""
    keys: dict[str, list] = {"ref": [], "got": []}

    def recording(name):
        def store(kind, params, compute):
            keys[name].append((kind, params))
            return compute()

        return store

    ref = SelectionContext(model=plain, calib=calib, batch_size=4, store=recording("ref"))
    got = SelectionContext(model=dispatched, calib=calib, batch_size=4, stream_store="disk", store=recording("got"))
    for name in ("block-influence", "angular", "ablation-nll", "ablation-kl", "sublayer-nll"):
        _close(got.score(name), ref.score(name))
    assert got.greedy(2).order == ref.greedy(2).order
    assert keys["got"] == keys["ref"] and keys["ref"]  # the setting enters no cache key
    with pytest.raises(ValueError, match="stream_store"):
        SelectionContext(model=plain, calib=calib, stream_store="nvme")


def test_similarity_token_chunks_with_padding(plain, calib) -> None:
    """Held off the device, the states come back a token slice at a time: padding and each row's last
    real token (left or right padded) are found in whichever slice holds them."""
    mask = torch.ones_like(calib)
    mask[0, :5] = 0  # left padding
    mask[1, -7:] = 0  # right padding: its last real token is in an early slice
    mask[2, -1] = 0
    ref = layer_similarity(plain, calib, mask, batch_size=4)
    got = layer_similarity(plain, calib, mask, batch_size=4, stream_store="cpu")
    assert (got.n_tokens, got.n_sequences) == (ref.n_tokens, ref.n_sequences) == (int(mask.sum()), len(calib))
    for field in ("cosine", "angular_all", "angular_last"):
        _close(getattr(got, field), getattr(ref, field))


def test_stream_store_setting_enters_no_cache_key() -> None:
    """The pruning stage's ``scoring.stream_store`` leaves every key as the default config's (fields as before)."""
    from frankenllama.cache import config_key, to_jsonable
    from frankenllama.stages.pruning import PruningConfig, ScoringConfig

    disk = PruningConfig(scoring=ScoringConfig(stream_store="disk"))
    assert config_key("pruning", disk) == config_key("pruning", PruningConfig())
    assert set(to_jsonable(ScoringConfig())) == {"calib", "batch_size", "shortlist", "taylor_jackknife", "sublayer_blocks"}
    with pytest.raises(ValueError, match="stream_store"):
        ScoringConfig(stream_store="ssd")
