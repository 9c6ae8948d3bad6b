"""Per-stage estimates: peak memory per device, forward/backward FLOPs and time, from the shapes alone.

Each stage is described by a ``Footprint``: which models' weights it holds (the unpruned model of L
blocks, the pruned student of L − k, or both for distillation with the teacher co-located), and the
bytes it needs besides them, by where they live:

* ``per_layer`` — with every decoder block, on that block's device (cached residual streams entering
  each block; activations saved for the backward pass; gradients and AdamW moments);
* ``each`` — on every device that runs blocks, one at a time (the working activations of one block);
* ``first`` / ``last`` — on the embedding's / LM head's device (residual-stream statistics / logits);
* ``host`` — CPU memory beside the run (cached teacher targets).

Peak per device = its weights + the per-layer bytes of its blocks + ``each`` + ``first``/``last``
where they land: an upper bound (the terms need not peak together). Activation sizes per token (b =
bytes of the compute dtype, H hidden, I intermediate, q = heads·head_dim, kv = kv_heads·head_dim):

* inference, one block: ``(3H + 4I)·b + 4H`` (the MLP's gate, up, activation and product beside the
  residual, plus RMSNorm's float32 upcast); attention is SDPA/flash (no T × T matrix kept);
* training, saved per block: ``(4H + 2q + 2kv + 4I)·b + 8H`` (every matmul's input, q/k/v after RoPE,
  SDPA's output, the MLP's gate/up/activation, two float32 norm inputs); no activation checkpointing;
* logits per position: ``V·(b + 8)`` at inference (model-dtype logits, a float32 copy and its
  log-softmax), ``V·(b + 12)`` in training (plus the gradient).

Time = FLOPs / (one device's sustained rate): with a ``device_map`` the blocks run one after another,
so several devices add memory, not speed (data parallelism, issue 13's third bullet, would add speed).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from frankenllama.plan.devices import DeviceSpec
from frankenllama.plan.placement import Placement, place, truncated
from frankenllama.plan.shapes import ModelShape

F32 = 4
# tokens of one zero-shot item as the evaluator runs it (its context and every choice in one packed row, in the chat
# template), per registry task: the mean over 200 items (seed 0) on SmolLM2's tokenizer (session 25); other
# tokenizers differ by a few tens of percent. A task not listed (a user's .jsonl file) counts ITEM_TOKENS_OTHER.
ITEM_TOKENS = {"arc_easy": 72, "arc_challenge": 83, "hellaswag": 194, "piqa": 84, "winogrande": 103, "boolq": 170,
               "openbookqa": 55, "sciq": 143}
ITEM_TOKENS_OTHER = 120


@dataclass(frozen=True)
class Settings:
    """The workload of every stage; ``Settings.from_profile()`` reads the "default" profile's (what the CLI uses)."""

    calib_tokens: int = 16_384  # similarity pass: tokens
    calib_block_len: int = 256
    calib_batch: int = 8
    score_tokens: int = 1_024  # ablation scan, SLEB and swap searches: calibration tokens
    score_block_len: int = 128
    score_batch: int = 4
    k: int | None = None  # blocks removed (None: 20 % of L, the workbook's heal_k for SmolLM2)
    swap_rounds: int = 8  # swap search's max_rounds (an upper bound: it stops when no swap helps)
    shortlist: int | None = None  # the greedy searches' shortlist after their first step (None: every candidate)
    recipe: str = "kd-lora"
    heal_tokens: int = 16_384
    heal_block_len: int = 256
    heal_batch: int = 4
    lora_rank: int = 8
    kd_top_k: int = 64
    eval_tokens: int = 1_048_576  # zero-shot evaluation: tokens one model runs (the profiles': ``zero_shot_tokens``)
    eval_block_len: int = 256
    eval_batch: int = 4
    # compress's run (``Settings.from_compress``): the part-swap rows, the patch's own calibration tokens, and an
    # evaluation of both the original and the compressed model (zero-shot and held-out perplexity)
    workload: str = "notebooks"  # "notebooks" (the stages of notebooks 01-04) or "compress"
    patch_tokens: int | None = None  # the linear patch's calibration tokens (None: heal_tokens)
    sublayer_tokens: int = 512  # the one-sub-block-out scan (part-swap's cost): calibration tokens
    part_width: int = 4  # part-swap: kept attentions tried in place of each removed one
    part_rounds: int = 1  # part-swap: swap rounds (an upper bound)
    ppl_tokens: int = 0  # held-out perplexity tokens per model (both domains)

    def removed(self, num_layers: int) -> int:
        return self.k if self.k is not None else max(1, round(0.2 * num_layers))

    @classmethod
    def from_profile(cls, name: str = "default") -> Settings:
        """The workloads of profile ``name`` (``frankenllama.stages.profiles``), where the settings live."""
        from frankenllama.stages.profiles import build

        run = build(name)
        sim, score, heal, tasks = run.similarity, run.pruning.scoring, run.healing, run.evaluation.tasks
        return cls(calib_tokens=sim.data.n_blocks * sim.data.block_len, calib_block_len=sim.data.block_len,
                   calib_batch=sim.batch_size, score_tokens=score.calib.n_blocks * score.calib.block_len,
                   score_block_len=score.calib.block_len, score_batch=score.batch_size, heal_tokens=heal.tokens,
                   heal_block_len=heal.block_len, heal_batch=heal.batch_size, kd_top_k=heal.kd_top_k,
                   lora_rank=heal.lora_rank, shortlist=score.shortlist,
                   sublayer_tokens=(score.sublayer_blocks or score.calib.n_blocks) * score.calib.block_len,
                   eval_tokens=zero_shot_tokens(tasks.tasks, tasks.limit), eval_block_len=run.evaluation.block_len)

    @classmethod
    def from_compress(cls, profile: str = "default", eval_tokens: int | None = None) -> Settings:
        """What ``python -m frankenllama compress --profile profile`` runs with its default strategy and recipe
        (part-swap; linear-patch+kd-lora): the pruning profile's scoring, the patch's calibration tokens, the
        training budget and LoRA rank, and the evaluation of the original and the compressed model.

        ``eval_tokens``: the zero-shot tokens of one model; default: the profile's items per task (every item
        where the profile scores them all) times the task's tokens per item (``ITEM_TOKENS``).
        """
        from frankenllama.compress.config import (DEFAULT_HEAL, DEFAULT_HEAL_OPTIONS, DEFAULT_STRATEGY, PROFILES,
                                                  CompressConfig)

        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
        c = CompressConfig(model="", target="0.8", profile=profile, **PROFILES[profile])
        base = cls.from_profile(profile)
        eval_tokens = zero_shot_tokens(c.tasks, c.eval_items) if eval_tokens is None else eval_tokens
        return dataclasses.replace(
            base, workload="compress", recipe=DEFAULT_HEAL, heal_tokens=c.tokens, patch_tokens=c.calib_tokens,
            heal_block_len=c.block_len, heal_batch=c.train_batch, kd_top_k=c.kd_top_k,
            lora_rank=dict(DEFAULT_HEAL_OPTIONS)["lora_rank"], eval_tokens=eval_tokens, eval_block_len=c.block_len,
            eval_batch=c.batch_size, ppl_tokens=2 * c.eval_blocks * c.block_len,
            part_rounds=1 if DEFAULT_STRATEGY == "part-swap" else 0)


def zero_shot_tokens(tasks, limit: int | None) -> int:
    """Tokens one model runs to score ``limit`` items (``None``: every item) of each of ``tasks``
    (``ITEM_TOKENS`` per item; a task not listed counts ``ITEM_TOKENS_OTHER``)."""
    from frankenllama.eval.tasks import load_task

    return sum((len(load_task(t).docs) if limit is None else limit) * ITEM_TOKENS.get(str(t), ITEM_TOKENS_OTHER)
               for t in tasks)


@dataclass
class Footprint:
    """Bytes of one stage besides the weights (see module doc); ``models`` = block counts of the models held."""

    models: tuple[int, ...]
    per_layer: float = 0.0  # applies to the blocks of models[0]
    each: float = 0.0
    first: float = 0.0
    last: float = 0.0
    host: float = 0.0
    trainable: dict = field(default_factory=dict)  # "per_layer"/"first"/"last" -> optimizer bytes


@dataclass(frozen=True)
class StageEstimate:
    name: str
    what: str
    memory: dict  # device key -> peak bytes
    capacity: float  # bytes per device
    host: float  # CPU-side bytes (beside any offloaded weights)
    forward_flops: float
    backward_flops: float
    seconds: float
    upper_bound: bool = False  # FLOPs and time count work the run may skip (a search's abandoned trials)
    alternative: bool = False  # another route to the row before it (the co-located teacher): not in the total

    @property
    def fits(self) -> bool:
        return all(v <= self.capacity for k, v in self.memory.items() if k != "cpu" or len(self.memory) == 1)

    @property
    def offloaded(self) -> bool:
        return "cpu" in self.memory and len(self.memory) > 1


def infer_token_bytes(s: ModelShape, b: int) -> float:
    """Working activations of one block at inference, per token (module doc)."""
    return (3 * s.hidden + 4 * s.intermediate) * b + F32 * s.hidden


def saved_token_bytes(s: ModelShape, b: int) -> float:
    """Activations one block saves for the backward pass, per token (module doc)."""
    return (4 * s.hidden + 2 * s.q_dim + 2 * s.kv_dim + 4 * s.intermediate) * b + 2 * F32 * s.hidden


def logits_bytes(s: ModelShape, b: int, train: bool = False) -> float:
    """Logits and their float32 companions per scored position (module doc)."""
    return s.vocab * (b + (3 if train else 2) * F32)


def lora_params_per_block(s: ModelShape, rank: int) -> int:
    """LoRA parameters of one block with adapters on all seven linear layers: ``r·(in + out)`` each."""
    H, I, q, kv = s.hidden, s.intermediate, s.q_dim, s.kv_dim
    return rank * ((H + q) + 2 * (H + kv) + (q + H) + 2 * (H + I) + (I + H))


def peak_memory(fp: Footprint, placements: list[Placement]) -> dict:
    """Peak bytes per device of a footprint over the placements of its models (module doc)."""
    memory: dict = {}
    for placement in placements:
        for device, weights in placement.weights.items():
            memory[device] = memory.get(device, 0.0) + weights
    main = placements[0]
    for device, n in main.layers.items():
        memory[device] = memory.get(device, 0.0) + n * (fp.per_layer + fp.trainable.get("per_layer", 0.0))
    for placement in placements:
        for device in placement.layers:
            memory[device] = memory.get(device, 0.0) + fp.each
    memory[main.first] = memory.get(main.first, 0.0) + fp.first + fp.trainable.get("first", 0.0)
    memory[main.last] = memory.get(main.last, 0.0) + fp.last + fp.trainable.get("last", 0.0)
    return memory


class Planner:
    """Places the model once per block count and turns footprints into ``StageEstimate`` rows."""

    def __init__(self, skeleton, shape: ModelShape, devices: DeviceSpec, dtype: torch.dtype):
        self.skeleton, self.shape, self.devices, self.dtype = skeleton, shape, devices, dtype
        self.bytes = torch.empty(0, dtype=dtype).element_size()
        self._placements: dict[int, Placement] = {}

    def placement(self, num_layers: int) -> Placement:
        if num_layers not in self._placements:
            model = self.skeleton if num_layers == self.shape.num_layers else truncated(self.skeleton, num_layers)
            self._placements[num_layers] = place(model, self.devices, self.dtype)
        return self._placements[num_layers]

    def row(self, name: str, what: str, fp: Footprint, forward: float, backward: float = 0.0,
            upper_bound: bool = False, alternative: bool = False) -> StageEstimate:
        memory = peak_memory(fp, [self.placement(n) for n in fp.models])
        seconds = (forward + backward) / (self.devices.tflops * 1e12)
        return StageEstimate(name, what, memory, self.devices.memory_bytes, fp.host, forward, backward, seconds,
                             upper_bound, alternative)
