#!/usr/bin/env python3
"""Writes a random-weight checkpoint of the full-size Llama 3.2 11B Vision architecture, for memory benchmarks.

The real weights cannot be downloaded here; memory and speed do not depend on the values. The config is
meta-llama/Llama-3.2-11B-Vision-Instruct's (transformers' MllamaConfig defaults are that model), the tensor
names and shapes are those of MllamaForConditionalGeneration 4.46.3 (the Hub layout), written as bf16 shards of
at most --shard-gb with a model.safetensors.index.json. The model is built on the meta device and each tensor is
drawn and written shard by shard, so the generator never holds more than one shard in memory.

The tokenizer, chat template and processor files come from the tiny fixture (its token ids all lie inside the
11B vocabulary); the config's special-token ids are taken from that tokenizer so the chat path agrees with it.

    python bench/make_mllama_11b_random.py --out /var/tmp/mllama-11b-random   # ~21 GB
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = REPO_ROOT / "worker" / "tests" / "fixtures" / "mllama-tiny"

TEXT_CONFIG = {
    "vocab_size": 128256,
    "hidden_size": 4096,
    "hidden_act": "silu",
    "num_hidden_layers": 40,
    "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38],
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "factor": 8.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "dropout": 0.0,
}
VISION_CONFIG = {
    "hidden_size": 1280,
    "hidden_act": "gelu",
    "num_hidden_layers": 32,
    "num_global_layers": 8,
    "attention_heads": 16,
    "num_channels": 3,
    "intermediate_size": 5120,
    "vision_output_dim": 7680,
    "image_size": 560,
    "patch_size": 14,
    "norm_eps": 1e-5,
    "max_num_tiles": 4,
    "intermediate_layers_indices": [3, 7, 15, 23, 30],
    "supported_aspect_ratios": [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (~21 GB; keep it out of the repo)")
    ap.add_argument("--shard-gb", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()

    import torch
    from safetensors.torch import save_file
    from transformers import MllamaConfig, MllamaForConditionalGeneration

    tiny_config = json.loads((TINY / "config.json").read_text())
    text = dict(TEXT_CONFIG)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        text[key] = tiny_config["text_config"][key]
    config = MllamaConfig(
        vision_config=VISION_CONFIG,
        text_config=text,
        image_token_index=tiny_config["image_token_index"],
        architectures=["MllamaForConditionalGeneration"],
        torch_dtype="bfloat16",
    )
    with torch.device("meta"):
        model = MllamaForConditionalGeneration(config)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}

    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    generator = torch.Generator().manual_seed(args.seed)
    limit = int(args.shard_gb * 1e9)
    shards: list[dict] = [{}]
    sizes = [0]
    for name, shape in shapes.items():
        numel = 1
        for d in shape:
            numel *= d
        if sizes[-1] and sizes[-1] + 2 * numel > limit:
            shards.append({})
            sizes.append(0)
        shards[-1][name] = shape
        sizes[-1] += 2 * numel

    weight_map = {}
    total = 0
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name, shape in shard.items():
            if name.endswith("norm.weight") or "layernorm" in name and name.endswith(".weight"):
                t = torch.ones(shape, dtype=torch.bfloat16)
            elif "gate" in name and len(shape) <= 1:
                t = torch.full(shape, 0.1, dtype=torch.bfloat16)
            else:
                t = (torch.randn(shape, generator=generator, dtype=torch.float32) * 0.02).to(torch.bfloat16)
            tensors[name] = t
            weight_map[name] = file
        save_file(tensors, str(out / file), metadata={"format": "pt"})
        total += sum(t.numel() * 2 for t in tensors.values())
        print(f"  {file}: {len(tensors)} tensors, {sum(t.numel() for t in tensors.values()) / 1e9:.2f} B params",
              flush=True)
        del tensors
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    config.save_pretrained(str(out))
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.json",
              "preprocessor_config.json", "generation_config.json"):
        if (TINY / f).is_file():
            shutil.copyfile(TINY / f, out / f)
    # The processor must make 560 px tiles as the 11B does (the tiny fixture uses 56 px).
    pre = json.loads((out / "preprocessor_config.json").read_text())
    pre["size"] = {"height": 560, "width": 560}
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    print(f"wrote {out}: {sum(int(torch.tensor(s).prod()) for s in shapes.values()) / 1e9:.2f} B parameters, "
          f"{total / 1e9:.1f} GB in {len(shards)} shards")


if __name__ == "__main__":
    main()
