#!/usr/bin/env python3
"""Inputs of the GPU benchmark, made on the GPU machine so nothing large travels: JPEG images of varied sizes and
aspect ratios (so Mllama's tiling varies as with real photos) and English descriptions of about 250 tokens, split
into plain sentences, that both engines translate in place of the random-weight model's meaningless output.

    python3 bench/gpu/make_inputs.py --out /tmp/vl-inputs --images 64
"""

import argparse
import json
import random
from pathlib import Path

SIZES = [(1280, 720), (1024, 1024), (800, 1200), (1920, 1080), (640, 480), (1200, 800), (720, 1280), (2048, 1024)]
SUBJECTS = ["a red sticky note", "a family kitchen", "a mountain lake", "a city street at dusk", "a pair of running shoes",
            "a credit card on a desk", "a smiling couple", "a cup of coffee", "a laptop screen", "a beach resort"]
DETAILS = ["soft morning light falls across the scene", "the background is slightly blurred", "bold white letters spell out a short slogan",
           "warm colours dominate the frame", "a small logo sits in the lower right corner", "the composition is centred and symmetrical",
           "a person in a blue jacket looks towards the camera", "green plants frame the left edge", "the text promises a limited-time offer",
           "shadows suggest late afternoon", "the product is shown from a low angle", "a price tag is visible on the shelf"]
MOODS = ["The overall tone is calm and reassuring", "The image feels energetic and optimistic", "The mood is nostalgic and warm",
         "The scene conveys trust and stability", "It evokes a sense of adventure"]


def description(rng: random.Random) -> str:
    sentences = [f"The image shows {rng.choice(SUBJECTS)} in a carefully arranged setting."]
    while sum(len(s.split()) for s in sentences) < 190:
        sentences.append(f"In this part of the picture, {rng.choice(DETAILS)}, and {rng.choice(DETAILS)}.")
        if rng.random() < 0.3:
            sentences.append(f"{rng.choice(MOODS)}.")
    return " ".join(sentences)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()

    import numpy as np
    from PIL import Image

    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    np_rng = np.random.default_rng(args.seed)
    for i in range(args.images):
        w, h = SIZES[i % len(SIZES)]
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 255 // (w + h))], axis=-1).astype(np.int16)
        noise = np_rng.integers(-40, 40, size=(h, w, 3), dtype=np.int16)
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(out / "images" / f"image-{i:04d}.jpg", quality=90)
    texts = [description(rng) for _ in range(args.images)]
    (out / "texts.json").write_text(json.dumps(texts, indent=1))
    words = sum(len(t.split()) for t in texts) / len(texts)
    print(f"wrote {args.images} images and texts of {words:.0f} words on average to {out}")


if __name__ == "__main__":
    main()
