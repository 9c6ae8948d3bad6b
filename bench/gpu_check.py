"""A device check for a machine with a GPU: the core pipeline on CUDA, compared against the CPU.

The real SmolLM2 weights are not needed: a model with SmolLM2's architecture and random weights is
built from ``--config`` (a model folder's ``config.json`` + tokenizer files), saved, and loaded back
through ``load_model`` with ``device="auto"``. Checks: the model lands on the GPU in bfloat16;
layer similarity on GPU (float32) matches the CPU within 1e-3; drop_layers keeps the model on the
GPU and KV-cached generation equals uncached; perplexity runs; throughput of the trunk forward.

    python bench/gpu_check.py --config data/cache/models/smollm2-135m
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from frankenllama import drop_layers, layer_similarity, load_model, perplexity, select_layers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True, help="folder with config.json and tokenizer files")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "no GPU visible"
    print("GPU:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    folder = Path(tempfile.mkdtemp())
    for f in args.config.iterdir():
        if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "config.json", "generation_config.json"):
            shutil.copy(f, folder)
    config = AutoConfig.from_pretrained(folder)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)

    model, tok = load_model(folder, device="auto")
    print("auto placement:", model.device, model.dtype)
    assert model.device.type == "cuda" and model.dtype == torch.bfloat16

    ids = torch.randint(0, config.vocab_size, (8, 256), generator=torch.Generator().manual_seed(0))
    gpu32, _ = load_model(folder, dtype="float32", device="cuda")
    cpu32, _ = load_model(folder, dtype="float32", device="cpu")
    sim_gpu = layer_similarity(gpu32, ids)
    sim_cpu = layer_similarity(cpu32, ids)
    diff = np.abs(sim_gpu.cosine - sim_cpu.cosine).max()
    print(f"similarity GPU vs CPU (fp32): max |Δcos| = {diff:.2e}")
    assert diff < 1e-3
    sim_bf16 = layer_similarity(model, ids)
    print("BI bf16 vs fp32 max |Δ|:", float(np.abs(sim_bf16.block_influence - sim_gpu.block_influence).max()))

    layers = select_layers(sim_gpu, 6, "angular-block")
    pruned = drop_layers(model, layers)
    assert next(pruned.parameters()).device.type == "cuda"
    prompt = ids[:1, :16].cuda()
    kw = dict(max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)
    a, b = pruned.generate(prompt, use_cache=True, **kw), pruned.generate(prompt, use_cache=False, **kw)
    print("pruned", layers, "generation cache == no cache:", bool(torch.equal(a, b)))
    print(f"perplexity bf16 full {perplexity(model, ids):.1f}, pruned {perplexity(pruned, ids):.1f} (random weights)")

    for name, m in (("full", model), ("pruned", pruned)):
        with torch.inference_mode():
            m.model(input_ids=ids.cuda())
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(10):
                m.model(input_ids=ids.cuda())
            torch.cuda.synchronize()
        print(f"{name}: {10 * ids.numel() / (time.perf_counter() - start):,.0f} tokens/s trunk forward")
    print("GPU CHECK OK")


if __name__ == "__main__":
    main()
