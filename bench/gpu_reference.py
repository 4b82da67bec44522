#!/usr/bin/env python3
"""The transformers side of the GPU benchmark (bench/gpu.sh runs it on the H100 beside vlm-gpu-bench, on the same
random-weight checkpoints, images and texts). Three pipelines:

  article  the article's: one image at a time, a description of --new-tokens tokens at batch 1, then one NLLB
           `generate` per language on the whole description in float32 (max_length 300 as the article sets it).
  batched  transformers' plain batched `generate` at --batch, no translation.
  best     transformers at its best: batched `generate` with a static cache so that the decode step is compiled
           (when the model supports it; the report says what ran), and the sentences of all descriptions translated
           as one fp16 batch per language.

Every answer generates exactly --new-tokens tokens (min_new_tokens), as vlm-gpu-bench does, since random weights
would otherwise stop anywhere. Prints one JSON line per pipeline.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def sync():
    import torch

    torch.cuda.synchronize()


def load_images(folder: Path, count: int):
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.is_file())
    images = [Image.open(p).convert("RGB") for p in files]
    return [images[i % len(images)] for i in range(count)]


class Vlm:
    """Llama 3.2 Vision on images, or LLaVA-NeXT-Video on videos of `frames` frames (one image repeated)."""

    def __init__(self, model_dir: str, prompt: str, frames: int | None):
        import torch
        from transformers import AutoProcessor

        if frames:
            from transformers import LlavaNextVideoForConditionalGeneration as Model
        else:
            from transformers import MllamaForConditionalGeneration as Model
        self.frames = frames
        started = time.perf_counter()
        self.model = Model.from_pretrained(model_dir, dtype=torch.bfloat16).to("cuda").eval()
        sync()
        self.load_s = time.perf_counter() - started
        try:
            self.processor = AutoProcessor.from_pretrained(model_dir)
        except RecursionError:
            # transformers 5's AutoProcessor loops on a LLaVA-NeXT-Video folder without video_preprocessor_config.json
            # (as the 4.x-era Hub layout has it): the processor is assembled from its parts instead.
            self.processor = llava_next_video_processor(model_dir)
        self.processor.tokenizer.padding_side = "left"
        media = {"type": "video"} if frames else {"type": "image"}
        messages = [{"role": "user", "content": [media, {"type": "text", "text": prompt}]}]
        self.prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def generate(self, images, new_tokens: int, **kwargs):
        import numpy as np
        import torch

        text = [self.prompt] * len(images)
        if self.frames:
            videos = [np.stack([np.asarray(i)] * self.frames) for i in images]
            inputs = self.processor(videos=videos, text=text, return_tensors="pt", padding=True)
        else:
            inputs = self.processor(images=[[i] for i in images], text=text, return_tensors="pt", padding=True)
        inputs = inputs.to("cuda")
        for key, value in inputs.items():
            if value.is_floating_point():
                inputs[key] = value.to(torch.bfloat16)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                      do_sample=False, **kwargs)
        sync()
        return out[:, inputs["input_ids"].shape[1]:]

    def step_ms(self, images, step_tokens: int, **kwargs) -> dict:
        def timed(tokens):
            started = time.perf_counter()
            self.generate(images, tokens, **kwargs)
            return time.perf_counter() - started

        one = timed(1)
        more = timed(1 + step_tokens)
        return {"batch": len(images), "first_token_ms": one * 1e3, "step_ms": (more - one) / step_tokens * 1e3}


def llava_next_video_processor(model_dir: str):
    """`LlavaNextVideoProcessor` from a folder's preprocessor_config.json (shared by its image and video
    processors, as in the Hub repo), processor_config.json, chat_template.json and tokenizer."""
    from transformers import AutoTokenizer, LlavaNextImageProcessor, LlavaNextVideoProcessor
    from transformers.models.llava_next_video.video_processing_llava_next_video import LlavaNextVideoVideoProcessor

    folder = Path(model_dir)
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    video_keys = ("size", "crop_size", "image_mean", "image_std", "resample", "rescale_factor", "do_resize",
                  "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb")
    video_processor = LlavaNextVideoVideoProcessor(**{k: pre[k] for k in video_keys if k in pre})
    settings = json.loads((folder / "processor_config.json").read_text())
    settings.pop("processor_class", None)
    template = folder / "chat_template.json"
    chat_template = json.loads(template.read_text())["chat_template"] if template.exists() else None
    return LlavaNextVideoProcessor(video_processor=video_processor,
                                   image_processor=LlavaNextImageProcessor.from_pretrained(model_dir),
                                   tokenizer=AutoTokenizer.from_pretrained(model_dir), chat_template=chat_template,
                                   **settings)


class Nllb:
    def __init__(self, model_dir: str, dtype):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, dtype=dtype).to("cuda").eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, src_lang="eng_Latn")

    def translate(self, texts: list[str], lang: str, **kwargs):
        import torch

        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True).to("cuda")
        with torch.inference_mode():
            out = self.model.generate(**inputs, forced_bos_token_id=self.tokenizer.convert_tokens_to_ids(lang),
                                      do_sample=False, **kwargs)
        sync()
        return out


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--translator", required=True)
    ap.add_argument("--images", required=True, type=Path)
    ap.add_argument("--texts", required=True, type=Path)
    ap.add_argument("--pipelines", default="article,batched,best")
    ap.add_argument("--article-count", type=int, default=2)
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--translation-tokens", type=int, default=48)
    ap.add_argument("--step-tokens", type=int, default=32)
    ap.add_argument("--langs", default="fra_Latn,spa_Latn,deu_Latn")
    ap.add_argument("--prompt", default="Describe this in detail.")
    ap.add_argument("--frames", type=int, help="videos of this many frames (LLaVA-NeXT-Video) instead of images")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--probe-static", action="store_true",
                    help="only try a static-cache generate at --batch and exit 0 if it works (run as a child process: "
                         "a failed try can leave a device-side assert that ends the CUDA context)")
    args = ap.parse_args()

    import torch

    langs = args.langs.split(",")
    texts = json.loads(args.texts.read_text())
    reports = []
    vlm = Vlm(args.model, args.prompt, args.frames)
    log(f"transformers: vision model loaded in {vlm.load_s:.1f} s")
    images = load_images(args.images, max(args.count, args.batch))
    if args.probe_static:
        vlm.generate(images[:args.batch], 4, cache_implementation="static")
        return
    vlm.generate(images[:2], 4)  # warm-up

    for pipeline in args.pipelines.split(","):
        torch.cuda.reset_peak_memory_stats()
        report = {"engine": f"transformers-{pipeline}", "new_tokens": args.new_tokens, "langs": langs,
                  "frames": args.frames}
        if pipeline == "article":
            nllb = Nllb(args.translator, torch.float32)
            nllb.translate([texts[0]], langs[0], max_length=8)  # warm-up
            n = args.article_count
            steps = [vlm.step_ms(images[:1], args.step_tokens)]
            started = time.perf_counter()
            translate_s = 0.0
            generated = 0
            for i in range(n):
                generated += vlm.generate(images[i:i + 1], args.new_tokens).numel()
                t0 = time.perf_counter()
                for lang in langs:
                    # The article: max_length=MAX_NEW_TOKENS (300) on the whole description; forced to that length.
                    nllb.translate([texts[i % len(texts)]], lang, max_length=300, min_length=300)
                translate_s += time.perf_counter() - t0
            total = time.perf_counter() - started
            report.update(images=n, batch=1, total_s=total, images_per_s=n / total, generated_tokens=generated,
                          translate_s=translate_s, translation_share=translate_s / total, steps=steps)
            del nllb
        elif pipeline in ("batched", "best"):
            extra = {}
            if pipeline == "best":
                # The model may not support a static cache (transformers 5.17's Mllama does not): tried in a child
                # process first, since a failure there can end this process's CUDA context.
                probe = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--probe-static"],
                                       capture_output=True, text=True)
                if probe.returncode == 0:
                    extra = {"cache_implementation": "static"}
                    vlm.generate(images[:args.batch], 4, **extra)  # compiles
                    report["static_cache"] = True
                else:
                    error = next((line for line in reversed(probe.stderr.splitlines()) if "Error" in line),
                                 probe.stderr.strip()[-300:])
                    log(f"transformers-best: static cache unavailable ({error}); dynamic cache")
                    report["static_cache"] = False
                    report["static_cache_error"] = error[:300]
            steps = [vlm.step_ms(images[:1], args.step_tokens, **extra),
                     vlm.step_ms(images[:args.batch], args.step_tokens, **extra)]
            nllb = Nllb(args.translator, torch.float16) if pipeline == "best" else None
            if nllb:
                nllb.translate(["Warm up."], langs[0], max_length=8)
            started = time.perf_counter()
            translate_s = 0.0
            generated = 0
            for start in range(0, args.count, args.batch):
                batch = images[start:start + args.batch]
                generated += vlm.generate(batch, args.new_tokens, **extra).numel()
                if nllb:
                    t0 = time.perf_counter()
                    pieces = [s for i in range(start, start + len(batch)) for s in sentences(texts[i % len(texts)])]
                    for lang in langs:
                        nllb.translate(pieces, lang, max_new_tokens=args.translation_tokens,
                                       min_new_tokens=args.translation_tokens)
                    translate_s += time.perf_counter() - t0
            total = time.perf_counter() - started
            report.update(images=args.count, batch=args.batch, total_s=total, images_per_s=args.count / total,
                          generated_tokens=generated, translate_s=translate_s, translation_share=translate_s / total,
                          steps=steps)
            del nllb
        report["tokens_per_s"] = report["generated_tokens"] / report["total_s"]
        report["peak_vram_gib"] = torch.cuda.max_memory_allocated() / 2**30
        reports.append(report)
        print(json.dumps(report), flush=True)
        if args.json:  # after each pipeline, so a later one that fails loses nothing
            args.json.write_text(json.dumps(reports, indent=1))


if __name__ == "__main__":
    main()
