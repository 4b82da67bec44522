#!/usr/bin/env python3
"""Writes bench/gpu/*.config.json: the full-size architectures of the GPU benchmark, as the Hub configs have them,
with the special-token ids of the tiny fixtures whose tokenizers the random checkpoints borrow (the real tokenizers
cannot be downloaded here). Sizes: meta-llama/Llama-3.2-11B-Vision-Instruct, facebook/nllb-200-distilled-600M,
llava-hf/LLaVA-NeXT-Video-7B-hf.

    python3 bench/gpu/make_configs.py      # json only, no torch
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
FIXTURES = ROOT / "worker" / "tests" / "fixtures"


def mllama_11b() -> dict:
    from make_mllama_11b_random import TEXT_CONFIG, VISION_CONFIG

    tiny = json.loads((FIXTURES / "mllama-tiny" / "config.json").read_text())
    text = dict(tiny["text_config"])
    text.update(TEXT_CONFIG)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        text[key] = tiny["text_config"][key]
    vision = dict(tiny["vision_config"])
    vision.update(VISION_CONFIG)
    config = {k: v for k, v in tiny.items() if k not in ("text_config", "vision_config")}
    config.update(text_config=text, vision_config=vision, torch_dtype="bfloat16")
    return config


def nllb_600m() -> dict:
    source = (ROOT / "tools" / "make_fixtures.py").read_text()
    start = source.index("NLLB_600M_CONFIG = {")
    end = source.index("\n}\n", start) + 2
    scope: dict = {}
    exec(source[start:end], {}, scope)
    return dict(sorted(scope["NLLB_600M_CONFIG"].items()))


def llava_next_video_7b() -> dict:
    tiny = json.loads((FIXTURES / "llava-next-video-tiny" / "config.json").read_text())
    config = dict(tiny)
    config.update(
        image_grid_pinpoints=LLAVA_PINPOINTS,
        image_seq_length=576,
        video_seq_length=288,
        vision_feature_layer=-2,
        torch_dtype="bfloat16",
    )
    text = dict(tiny["text_config"])
    text.update(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, head_dim=128, max_position_embeddings=4096, rope_theta=10000.0,
                rope_scaling=None, vocab_size=32064, rms_norm_eps=1e-5, torch_dtype="bfloat16")
    vision = dict(tiny["vision_config"])
    vision.update(hidden_size=1024, image_size=336, intermediate_size=4096, num_attention_heads=16,
                  num_hidden_layers=24, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    config.update(text_config=text, vision_config=vision)
    return config


# llava-hf/LLaVA-NeXT-Video-7B-hf: anyres grids of 336 px crops.
LLAVA_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
LLAVA_PREPROCESSOR = {"crop_size": {"height": 336, "width": 336}, "size": {"shortest_edge": 336},
                      "image_grid_pinpoints": LLAVA_PINPOINTS}


def main() -> None:
    out = ROOT / "bench" / "gpu"
    configs = (("mllama-11b", mllama_11b()), ("nllb-600m", nllb_600m()), ("llava-next-video-7b", llava_next_video_7b()))
    for name, config in configs:
        path = out / f"{name}.config.json"
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        print(f"wrote {path}")
    path = out / "llava-next-video-7b.preprocessor.json"
    path.write_text(json.dumps(LLAVA_PREPROCESSOR) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
