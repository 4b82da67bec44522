#!/usr/bin/env python3
"""Summarises a `bench/gpu.sh images` run (the JSON files it leaves in OUT) as the BENCHMARKS.md table: images/s,
tokens/s, decode step at batch 1 and at the largest batch, peak VRAM, translation share, the ratios the GPU issue
targets, and the batch-1 step against reading every decoder weight once at the measured bandwidth.

    python3 bench/gpu/summarize.py OUT_DIR [--tag images|videos]
"""

import argparse
import json
from pathlib import Path


def decode_weight_params(config: dict) -> int:
    """Parameters one Mllama decode step reads: every decoder projection (cross-attention layers without their
    key/value projections, which run once per image) and the LM head."""
    t = config["text_config"]
    t.setdefault("cross_attention_layers", [])
    h, i, heads, kv = t["hidden_size"], t["intermediate_size"], t["num_attention_heads"], t["num_key_value_heads"]
    head_dim = h // heads
    mlp = 3 * h * i
    self_attn = h * heads * head_dim * 2 + h * kv * head_dim * 2
    cross_attn = h * heads * head_dim * 2
    layers = t["num_hidden_layers"]
    cross = len(t["cross_attention_layers"])
    return (layers - cross) * (self_attn + mlp) + cross * (cross_attn + mlp) + t["vocab_size"] * h


def peak_vram(out: Path, name: str):
    path = out / f"vram-{name}.txt"
    if not path.exists():
        return None
    values = [int(v) for v in path.read_text().split() if v.strip().isdigit()]
    return max(values) / 1024 if values else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--tag", default="images", choices=["images", "videos"])
    ap.add_argument("--config", type=Path)
    args = ap.parse_args()
    if args.config is None:
        name = "mllama-11b" if args.tag == "images" else "llava-next-video-7b"
        args.config = Path(__file__).with_name(f"{name}.config.json")

    rows = []
    for path in sorted(args.out.glob(f"vislingo-{args.tag}-*.json")):
        report = json.loads(path.read_text())
        report["peak_vram_gib"] = peak_vram(args.out, path.stem)
        rows.append(report)
    reference = args.out / f"transformers-{args.tag}.json"
    if reference.exists():
        for report in json.loads(reference.read_text()):
            report["peak_vram_gib"] = report.get("peak_vram_gib") or peak_vram(args.out, f"transformers-{args.tag}")
            rows.append(report)

    print("| engine | quant | images | batch | images/s | tokens/s | step b=1 (ms) | step best batch (ms) "
          "| translation share | peak VRAM (GiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        steps = r.get("steps", [])
        one = next((s["step_ms"] for s in steps if s["batch"] == 1), None)
        big = max(steps, key=lambda s: s["batch"]) if steps else None
        fmt = lambda v, f="{:.2f}": "-" if v is None else f.format(v)  # noqa: E731
        big_step = "-" if big is None else "{:.2f} (b={})".format(big["step_ms"], big["batch"])
        print(f"| {r['engine']} | {r.get('quant', 'bf16')} | {r['images']} | {r['batch']} "
              f"| {fmt(r['images_per_s'], '{:.3f}')} | {fmt(r.get('tokens_per_s'), '{:.0f}')} | {fmt(one)} "
              f"| {big_step} | {fmt(r.get('translation_share'), '{:.1%}')} | {fmt(r.get('peak_vram_gib'), '{:.1f}')} |")

    by = {r["engine"] + ":" + str(r.get("quant", "")): r for r in rows}
    ratios = []
    # Each bf16 vislingo run (one per attention softmax kernel) against each transformers pipeline.
    for engine in sorted(k for k in by if k.startswith("vislingo") and k.endswith(":none")):
        vis = by[engine]
        for name in ("transformers-article:", "transformers-batched:", "transformers-best:"):
            if name in by:
                ratios.append(f"{engine[:-5]} bf16 / {name[:-1]}: "
                              f"{vis['images_per_s'] / by[name]['images_per_s']:.1f}x images/s")
    for line in ratios:
        print(line)
    bandwidth = args.out / "bandwidth.json"
    if bandwidth.exists() and args.config.exists():
        bw = json.loads(bandwidth.read_text())["bandwidth_gb_s"]
        params = decode_weight_params(json.loads(args.config.read_text()))
        for r in rows:
            if not r["engine"].startswith("vislingo"):
                continue
            one = next((s["step_ms"] for s in r.get("steps", []) if s["batch"] == 1), None)
            bits = {"none": 16, "q8_0": 8.5, "q4k": 4.5}.get(r.get("quant", "none"), 16)
            # The LM head stays dense (bf16) under --quant.
            head = json.loads(args.config.read_text())["text_config"]
            head_params = head["vocab_size"] * head["hidden_size"]
            weight_bytes = (params - head_params) * bits / 8 + head_params * 2
            bound_ms = weight_bytes / (bw * 1e9) * 1e3
            if one:
                print(f"{r['engine']} {r.get('quant')}: batch-1 step {one:.2f} ms vs bound {bound_ms:.2f} ms "
                      f"({weight_bytes / 1e9:.1f} GB at {bw:.0f} GB/s): {one / bound_ms:.2f}x")


if __name__ == "__main__":
    main()
