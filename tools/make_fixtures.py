#!/usr/bin/env python3
"""Reference-fixture generators for vislingo's Rust model ports.

Every subcommand builds one fixture family with fixed seeds, so the outputs are
reproducible byte for byte (on the same library versions, see
tools/requirements.txt). Nothing is downloaded: the Hugging Face Hub is never
contacted, all weights are random and all tokenizers are trained locally.

Subcommands
-----------
nllb              tiny random-weight NLLB-200 / M2M100 checkpoint + tokenizer +
                  reference outputs (committed: worker/tests/fixtures/nllb-tiny)
nllb-600m-random  full-size facebook/nllb-200-distilled-600M architecture with
                  random weights, for CPU benchmarks (~2.5 GB, NOT committed)
mllama            tiny random-weight Llama 3.2 Vision (Mllama) checkpoint in the Hub
                  layout + processor + test images + reference outputs
                  (committed: worker/tests/fixtures/mllama-tiny)
llava-next-video  tiny random-weight LLaVA-NeXT-Video checkpoint in the Hub layout +
                  processor + test images / video frames + reference outputs
                  (committed: worker/tests/fixtures/llava-next-video-tiny)
llava-next-video-prompts
                  only pipeline_prompts.json of that fixture: the worker's built-in task
                  prompts through its chat template and tokenizer (transformers only)
prequant          tensors in the layouts of pre-quantized Hub checkpoints (bitsandbytes
                  NF4/FP4 with and without double quantization, compressed-tensors
                  FP8) with their reference dequantization, and mllama-tiny quantized
                  in both layouts with reference logits on the dequantized weights
                  (committed: worker/tests/fixtures/prequant)
jpeg              JPEG files of many kinds (subsampling, odd sizes, progressive,
                  restart markers, arithmetic coding, gray, CMYK, ...) and Pillow's
                  decoded RGB (committed: worker/tests/fixtures/jpeg); needs
                  libjpeg-turbo's `cjpeg` (Debian: libjpeg-turbo-progs) for the
                  encodings Pillow cannot write

New fixture families (llava-next-video, ...) go beside these: one
`cmd_<family>(args)` function plus one `sub.add_parser(...)` entry in `main()`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

# Run on the CPU even where a GPU exists: the references must not depend on it.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- #
# shared helpers
# --------------------------------------------------------------------------- #

def _import_ml():
    """Import the heavy libraries lazily so `--help` stays fast."""
    import numpy as np  # noqa: F401
    import torch
    import transformers  # noqa: F401

    torch.set_num_threads(1)  # reduction order (and so every float) independent of the host
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return torch


def fmt_float(x: float) -> float:
    """Round to 7 significant digits (f32 has ~7.2); keeps JSON small and stable."""
    x = float(x)
    if x == 0.0 or not math.isfinite(x):
        return 0.0 if x == 0.0 else x
    return float(f"{x:.7g}")


def tensor_json(t) -> dict:
    """{"shape": [...], "data": [flat row-major f32 values]}"""
    t = t.detach().to("cpu").float().contiguous()
    return {"shape": list(t.shape), "data": [fmt_float(v) for v in t.reshape(-1).tolist()]}


def write_json(path: Path, obj, compact: bool = False) -> None:
    with open(path, "w", encoding="utf-8") as f:
        if compact:
            json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        else:
            json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def safetensors_names(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return sorted(f.keys())


# --------------------------------------------------------------------------- #
# nllb: tiny random NLLB-200 / M2M100 fixture
# --------------------------------------------------------------------------- #

NLLB_TINY_DIR = REPO_ROOT / "worker" / "tests" / "fixtures" / "nllb-tiny"

# Small training corpus for the tiny sentencepiece model. Mostly English (the
# test inputs are English), plus a few lines in the target-language scripts so
# that Latin/Devanagari/Han/Arabic/Cyrillic all have pieces.
NLLB_CORPUS_EN = [
    "A photo of a red bicycle leaning against a blue wall.",
    "The advertisement shows a smiling woman holding a cup of coffee.",
    "Two children are playing with a yellow ball on the beach.",
    "This picture was taken at sunset; the sky is orange, pink and purple.",
    "The brand logo is printed in white letters on a green background.",
    "Buy one, get one free! Offer valid until 31 December 2024.",
    "Our new phone has a 6.1-inch screen and a 48 MP camera.",
    "Prices start at $19.99 (taxes not included).",
    "Save 25% on all shoes this weekend only.",
    "Visit www.example.com or call 1-800-555-0199 for more information.",
    "The poster says \"Fresh bread every morning\" in large black letters.",
    "She said, \u201cThis is the best pizza in town.\u201d",
    "\u201cHilltop\u201d is a small bakery brand from the north of the country.",
    "The Coca-Cola truck is parked in front of the grey building.",
    "A man in a dark suit is reading a newspaper on the train.",
    "The image contains a table, three chairs and a green plant.",
    "Colours: red, orange, yellow, green, blue, indigo, violet, black, white, grey, brown.",
    "The banner reads: SALE - up to 70% off!",
    "At 12:30 the shop closes for lunch, and it opens again at 14:00.",
    "The value of pi is about 3.14159, and e is about 2.71828.",
    "More than 1,000 people attended the concert on Saturday night.",
    "The temperature dropped to -5 degrees last night.",
    "Ask for the menu; our chef recommends the fish of the day.",
    "The caption under the photo reads \u2018Summer 2023\u2019.",
    "Please don't touch the paintings, thank you!",
    "Is this your first visit? Welcome to our store.",
    "The label on the bottle says 0.5 L, 12% alcohol.",
    "A cat is sleeping on a soft brown sofa next to the window.",
    "The street is full of colourful signs, lights and small shops.",
    "Our company was founded in 1998 and now has 250 employees.",
    "The mountains in the background are covered with snow.",
    "A group of friends is having dinner at a long wooden table.",
    "The text in the image is blurry, but the word OPEN is visible.",
    "New flavour: strawberry & vanilla (limited edition).",
    "Scan the QR code to download the app for free.",
    "The meeting is on Monday, 3 June, at 9:45 a.m.",
    "Free delivery for orders over \u20ac50.",
    "The museum is open every day except Tuesday.",
    "He bought 3 apples, 2 bananas and a bottle of milk.",
    "The shirt is available in sizes S, M, L and XL.",
    "Our hotel offers a beautiful view of the sea and the old harbour.",
    "The camera captured a bird flying over the lake.",
    "Warning: the floor is wet!",
    "The sign on the door says \"Push\", not \"Pull\".",
    "Follow us on social media for news and special offers.",
    "The red, white and blue flag is waving in the wind.",
    "Her dress is light blue with small white flowers.",
    "Each box contains 24 pieces and weighs 1.2 kg.",
    "The dog is running across a green field with a stick in its mouth.",
    "This product is made from 100% recycled materials.",
    "Good morning! How can we help you today?",
    "The sports car is silver and very fast.",
    "In the picture, a woman is painting a portrait of an old man.",
    "The billboard shows a family eating breakfast together.",
    "The price increased from 1,250 to 1,400 dollars (about 12%).",
    "Translate the text on this image into another language, please.",
    "The first paragraph describes the scene; the second one explains the offer.",
    "Our team wishes you a happy new year and good health.",
    "A large crowd is waiting outside the stadium before the match.",
    "The sandwich costs 4.50 and the coffee costs 2.20.",
    "The children's book has bright pictures of animals and trees.",
    "The building has 12 floors and a glass roof.",
    "She wears a black hat, a grey coat and red gloves.",
    "The menu is written on a chalkboard next to the counter.",
    "Hurry up, only a few tickets are left!",
    "Call now: (555) 123-4567.",
    "Order online at shop.example.org/deals before midnight.",
    "The photographer used natural light for this portrait.",
]
NLLB_CORPUS_OTHER = [
    # French
    "Une photo d'un v\u00e9lo rouge devant un mur bleu.",
    "La publicit\u00e9 montre une femme qui tient une tasse de caf\u00e9.",
    "Le magasin est ouvert tous les jours sauf le mardi.",
    "Livraison gratuite pour les commandes de plus de 50 euros.",
    # Spanish
    "Una foto de una bicicleta roja junto a una pared azul.",
    "El anuncio muestra a una mujer con una taza de caf\u00e9.",
    "\u00a1Compra uno y ll\u00e9vate otro gratis!",
    "La tienda est\u00e1 abierta todos los d\u00edas excepto el martes.",
    # Hindi
    "\u0928\u0940\u0932\u0940 \u0926\u0940\u0935\u093e\u0930 \u0915\u0947 \u0938\u093e\u092e\u0928\u0947 \u090f\u0915 \u0932\u093e\u0932 \u0938\u093e\u0907\u0915\u093f\u0932 \u0915\u0940 \u0924\u0938\u094d\u0935\u0940\u0930\u0964",
    "\u092f\u0939 \u0935\u093f\u091c\u094d\u091e\u093e\u092a\u0928 \u0915\u0949\u092b\u0940 \u0915\u093e \u0915\u092a \u092a\u0915\u0921\u093c\u0947 \u090f\u0915 \u092e\u0939\u093f\u0932\u093e \u0915\u094b \u0926\u093f\u0916\u093e\u0924\u093e \u0939\u0948\u0964",
    "\u0926\u0941\u0915\u093e\u0928 \u092e\u0902\u0917\u0932\u0935\u093e\u0930 \u0915\u094b \u091b\u094b\u0921\u093c\u0915\u0930 \u0939\u0930 \u0926\u093f\u0928 \u0916\u0941\u0932\u0940 \u0930\u0939\u0924\u0940 \u0939\u0948\u0964",
    "\u0906\u091c \u092e\u094c\u0938\u092e \u092c\u0939\u0941\u0924 \u0905\u091a\u094d\u091b\u093e \u0939\u0948 \u0914\u0930 \u0906\u0938\u092e\u093e\u0928 \u0928\u0940\u0932\u093e \u0939\u0948\u0964",
    # Chinese (Simplified)
    "\u4e00\u5f20\u7ea2\u8272\u81ea\u884c\u8f66\u9760\u5728\u84dd\u8272\u5899\u4e0a\u7684\u7167\u7247\u3002",
    "\u5e7f\u544a\u4e0a\u6709\u4e00\u4f4d\u62ff\u7740\u5496\u5561\u676f\u7684\u5973\u58eb\u3002",
    "\u5546\u5e97\u9664\u5468\u4e8c\u5916\u6bcf\u5929\u8425\u4e1a\u3002",
    "\u4e70\u4e00\u9001\u4e00\uff0c\u4f18\u60e0\u5230\u5341\u4e8c\u6708\u5e95\u3002",
    # Arabic
    "\u0635\u0648\u0631\u0629 \u0644\u062f\u0631\u0627\u062c\u0629 \u062d\u0645\u0631\u0627\u0621 \u0623\u0645\u0627\u0645 \u062c\u062f\u0627\u0631 \u0623\u0632\u0631\u0642.",
    "\u064a\u064f\u0638\u0647\u0631 \u0627\u0644\u0625\u0639\u0644\u0627\u0646 \u0627\u0645\u0631\u0623\u0629 \u062a\u062d\u0645\u0644 \u0641\u0646\u062c\u0627\u0646 \u0642\u0647\u0648\u0629.",
    "\u0627\u0644\u0645\u062a\u062c\u0631 \u0645\u0641\u062a\u0648\u062d \u0643\u0644 \u064a\u0648\u0645 \u0645\u0627 \u0639\u062f\u0627 \u064a\u0648\u0645 \u0627\u0644\u062b\u0644\u0627\u062b\u0627\u0621.",
    "\u062a\u0648\u0635\u064a\u0644 \u0645\u062c\u0627\u0646\u064a \u0644\u0644\u0637\u0644\u0628\u0627\u062a \u0641\u0648\u0642 \u062e\u0645\u0633\u064a\u0646 \u064a\u0648\u0631\u0648.",
    # Russian
    "\u0424\u043e\u0442\u043e\u0433\u0440\u0430\u0444\u0438\u044f \u043a\u0440\u0430\u0441\u043d\u043e\u0433\u043e \u0432\u0435\u043b\u043e\u0441\u0438\u043f\u0435\u0434\u0430 \u0443 \u0441\u0438\u043d\u0435\u0439 \u0441\u0442\u0435\u043d\u044b.",
    "\u0412 \u0440\u0435\u043a\u043b\u0430\u043c\u0435 \u0436\u0435\u043d\u0449\u0438\u043d\u0430 \u0434\u0435\u0440\u0436\u0438\u0442 \u0447\u0430\u0448\u043a\u0443 \u043a\u043e\u0444\u0435.",
    "\u041c\u0430\u0433\u0430\u0437\u0438\u043d \u043e\u0442\u043a\u0440\u044b\u0442 \u043a\u0430\u0436\u0434\u044b\u0439 \u0434\u0435\u043d\u044c, \u043a\u0440\u043e\u043c\u0435 \u0432\u0442\u043e\u0440\u043d\u0438\u043a\u0430.",
    "\u0411\u0435\u0441\u043f\u043b\u0430\u0442\u043d\u0430\u044f \u0434\u043e\u0441\u0442\u0430\u0432\u043a\u0430 \u043f\u0440\u0438 \u0437\u0430\u043a\u0430\u0437\u0435 \u043e\u0442 50 \u0435\u0432\u0440\u043e.",
]

NLLB_CASES = [
    ("short", "A photo of a red bicycle."),
    (
        "long_multi_paragraph",
        "The advertisement shows a smiling family eating breakfast together in a bright kitchen. "
        "On the table there are three cups of coffee, a bottle of milk and fresh bread.\n\n"
        "In the second part of the picture, a large banner reads \"Good morning!\" in white letters "
        "on a blue background. The brand logo is printed in the corner.\n\n"
        "The last paragraph explains the offer: buy one box and get the second one free, "
        "only this weekend. Visit our store or order online.",
    ),
    (
        "digits_punctuation",
        "Save 25% today: pi is 3.14, over 1,000 sold (since 1998) - "
        "open 12:30-14:00, visit www.example.com/deals?id=42 & call (555) 123-4567!",
    ),
    (
        "quoted_brand",
        "The sign says \u201cCoca-Cola\u201d and the box says \"Hilltop\" \u2018Summer\u2019 edition.",
    ),
]
NLLB_SRC_LANG = "eng_Latn"
NLLB_TGT_LANGS = ["fra_Latn", "hin_Deva", "zho_Hans", "arb_Arab", "rus_Cyrl"]
NLLB_BATCH_TGT = "hin_Deva"
NLLB_MAX_NEW_TOKENS = 24
NLLB_EXTRA_BEAM = [
    {"num_beams": 3, "length_penalty": 0.6, "early_stopping": True},
    {"num_beams": 5, "length_penalty": 2.0, "early_stopping": False},
    {"num_beams": 4, "length_penalty": 1.0, "early_stopping": "never"},
]

# Generation config exactly like facebook/nllb-200-distilled-600M's (minus version keys).
NLLB_GENERATION_CONFIG = {
    "bos_token_id": 0,
    "decoder_start_token_id": 2,
    "eos_token_id": 2,
    "max_length": 200,
    "pad_token_id": 1,
}

# Real config.json fields of facebook/nllb-200-distilled-600M.
NLLB_600M_CONFIG = {
    "activation_dropout": 0.0,
    "activation_function": "relu",
    "architectures": ["M2M100ForConditionalGeneration"],
    "attention_dropout": 0.1,
    "bos_token_id": 0,
    "d_model": 1024,
    "decoder_attention_heads": 16,
    "decoder_ffn_dim": 4096,
    "decoder_layerdrop": 0,
    "decoder_layers": 12,
    "decoder_start_token_id": 2,
    "dropout": 0.1,
    "encoder_attention_heads": 16,
    "encoder_ffn_dim": 4096,
    "encoder_layerdrop": 0,
    "encoder_layers": 12,
    "eos_token_id": 2,
    "init_std": 0.02,
    "is_encoder_decoder": True,
    "max_length": 200,
    "max_position_embeddings": 1024,
    "model_type": "m2m_100",
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "scale_embedding": True,
    "tokenizer_class": "NllbTokenizer",
    "torch_dtype": "float32",
    "use_cache": True,
    "vocab_size": 256206,
}

# Candidate (seed, eos_boost) pairs, tried in order; the first that passes all
# checks (no greedy near-ties, float64 agreement, a mix of early-EOS and
# max-length outputs, see nllb_acceptable) is used. Deterministic: the same pair wins on every run.
NLLB_SEEDS = [1234, 1235, 1236, 1237, 1238, 1239, 1240, 1241]
NLLB_EOS_BOOSTS = [2.0, 2.5, 2.75, 3.0, 3.5, 4.0, 5.0]
NLLB_MIN_GAP = 1e-3


def nllb_train_spm(workdir: Path) -> Path:
    import sentencepiece as spm

    corpus = workdir / "corpus.txt"
    lines = NLLB_CORPUS_EN + NLLB_CORPUS_OTHER
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    prefix = workdir / "spm"
    # unk=0, bos=1, eos=2 and no pad piece: the layout of NLLB's own
    # sentencepiece model, which NllbTokenizer's fairseq offset (+1) assumes.
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(prefix),
        model_type="bpe",
        vocab_size=1000,
        hard_vocab_limit=False,
        character_coverage=1.0,
        byte_fallback=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


def nllb_build_tokenizers(spm_model: Path):
    from transformers import NllbTokenizer, NllbTokenizerFast

    # model_max_length: the real NLLB tokenizer_config.json says 1024 (= its
    # max_position_embeddings); the tiny model has 256 positions.
    kw = {"legacy_behaviour": False, "model_max_length": 256}
    slow = NllbTokenizer(vocab_file=str(spm_model), **kw)
    fast = NllbTokenizerFast(vocab_file=str(spm_model), **kw)  # converted from the slow one
    return slow, fast


def nllb_check_tokenizers(slow, fast, texts, langs) -> None:
    for lang in langs:
        slow.src_lang = lang
        fast.src_lang = lang
        for t in texts:
            a = slow(t).input_ids
            b = fast(t).input_ids
            if a != b:
                raise SystemExit(f"slow/fast tokenizer mismatch for {lang} {t!r}:\n slow {a}\n fast {b}")
            if slow.decode(a, skip_special_tokens=True) != fast.decode(b, skip_special_tokens=True):
                raise SystemExit(f"slow/fast decode mismatch for {t!r}")
    slow.src_lang = NLLB_SRC_LANG
    fast.src_lang = NLLB_SRC_LANG


def nllb_tiny_config(vocab_size: int):
    from transformers import M2M100Config

    config = M2M100Config(
        vocab_size=vocab_size,
        d_model=64,
        encoder_layers=2,
        decoder_layers=3,
        encoder_attention_heads=4,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=96,
        max_position_embeddings=256,
        scale_embedding=True,
        activation_function="relu",
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        encoder_layerdrop=0.0,
        decoder_layerdrop=0.0,
        init_std=0.02,
        use_cache=True,
        is_encoder_decoder=True,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        tie_word_embeddings=True,
        architectures=["M2M100ForConditionalGeneration"],
        tokenizer_class="NllbTokenizer",
    )
    # plain softmax(QK^T)V attention for the references (sdpa agrees to ~1e-7)
    config._attn_implementation = "eager"
    return config


def nllb_tiny_model(config, seed: int, eos_boost: float):
    """Random tiny model with spread-out logits and varied output lengths.

    Plain N(0, 0.02) init gives nearly flat logits (near-ties everywhere), so:
      * embeddings N(0, 0.3) -> logits have std ~2.5;
      * q/k/v/fc1 N(0, 0.3), out_proj/fc2 N(0, 0.4), biases N(0, 0.1): the layers
        dominate the residual stream, which otherwise is mostly the (x8 scaled)
        input embedding;
      * layer norms: weight N(1, 0.1), bias N(0, 0.1), except the decoder's final
        layer norm whose weight is N(0, 1): with tied embeddings and weight ~1
        the logit of the previous token is huge (~16 vs ~8 for the runner-up)
        and greedy search just repeats one token forever;
      * EOS (id 2) boosted by a constant `eos_boost` on its logit, so some
        outputs stop before max_new_tokens and some do not.
    """
    import torch
    from transformers import GenerationConfig, M2M100ForConditionalGeneration

    torch.manual_seed(seed)
    model = M2M100ForConditionalGeneration(config)
    g = torch.Generator().manual_seed(seed)

    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=g, dtype=torch.float32) * std + mean

    with torch.no_grad():
        for name, p in model.named_parameters():  # deterministic order; tied params listed once
            if name == "model.decoder.layer_norm.weight":
                p.copy_(normal(p.shape, 1.0))
            elif "layer_norm" in name:
                p.copy_(normal(p.shape, 0.1, 1.0) if name.endswith("weight") else normal(p.shape, 0.1))
            elif name == "model.shared.weight":
                p.copy_(normal(p.shape, 0.3))
            elif name.endswith(("out_proj.weight", "fc2.weight")):
                p.copy_(normal(p.shape, 0.4))
            elif name.endswith(".weight"):
                p.copy_(normal(p.shape, 0.3))
            elif name.endswith(".bias"):
                p.copy_(normal(p.shape, 0.1))
            else:
                raise RuntimeError(f"unexpected parameter {name}")
        # logits = (LN(h) * w + b) @ shared.T, so adding k * e2 / |e2|^2 to the
        # final layer norm's bias b adds k to the EOS logit at every step (other
        # logits move by k * <e_v, e2> / |e2|^2, a small random amount).
        e2 = model.model.shared.weight[2]
        model.model.decoder.layer_norm.bias += eos_boost * e2 / e2.dot(e2)
    assert model.lm_head.weight.data_ptr() == model.model.shared.weight.data_ptr()
    assert model.model.encoder.embed_tokens.weight.data_ptr() == model.model.shared.weight.data_ptr()
    model.generation_config = GenerationConfig(**NLLB_GENERATION_CONFIG)
    model.eval()
    return model


def nllb_generate(model, enc, tgt_id, num_beams, **kw):
    import torch

    with torch.no_grad():
        return model.generate(
            **enc,
            forced_bos_token_id=tgt_id,
            max_new_tokens=NLLB_MAX_NEW_TOKENS,
            num_beams=num_beams,
            do_sample=False,
            **kw,
        )


def nllb_greedy_gaps(model, enc, tgt_id) -> tuple[list, float]:
    """Greedy outputs plus the smallest top1-top2 raw-logit gap over all free steps."""
    import torch

    out = nllb_generate(model, enc, tgt_id, 1, output_logits=True, return_dict_in_generate=True)
    seqs = out.sequences
    eos = model.generation_config.eos_token_id
    min_gap = float("inf")
    # step 0 is the forced target-language token; later steps are free choices
    for step, logits in enumerate(out.logits):
        if step == 0:
            continue
        for row in range(logits.shape[0]):
            if eos in seqs[row, 1 : step + 1].tolist():  # row already finished
                continue
            top = torch.topk(logits[row].float(), 2).values
            min_gap = min(min_gap, float(top[0] - top[1]))
    return seqs.tolist(), min_gap


def nllb_ends_early(seq: list[int], eos: int = 2, pad: int = 1) -> bool:
    """True when generation stopped on EOS (seq[0] is the decoder start token, also 2)."""
    body = [t for t in seq[1:] if t != pad]
    return bool(body) and body[-1] == eos


def nllb_run_all(model, tok, want_logits: bool):
    """Everything that goes into reference.json (plus diagnostics)."""
    import torch

    tok.src_lang = NLLB_SRC_LANG
    cases = []
    min_gap = float("inf")
    for name, text in NLLB_CASES:
        enc = tok(text, return_tensors="pt")
        ids = enc.input_ids
        if ids.shape[1] > model.config.max_position_embeddings:
            raise SystemExit(f"case {name}: {ids.shape[1]} tokens > max_position_embeddings")
        with torch.no_grad():
            enc_out = model.get_encoder()(input_ids=ids, attention_mask=enc.attention_mask)
        case = {
            "name": name,
            "src_lang": NLLB_SRC_LANG,
            "text": text,
            "input_ids": ids[0].tolist(),
            "encoder_last_hidden_state": tensor_json(enc_out.last_hidden_state) if want_logits else None,
            "targets": [],
        }
        for tgt in NLLB_TGT_LANGS:
            tgt_id = tok.convert_tokens_to_ids(tgt)
            dec = torch.tensor([[model.config.decoder_start_token_id, tgt_id]])
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=enc.attention_mask, decoder_input_ids=dec).logits
            greedy, gap = nllb_greedy_gaps(model, enc, tgt_id)
            min_gap = min(min_gap, gap)
            beam = nllb_generate(model, enc, tgt_id, 4)[0].tolist()
            case["targets"].append(
                {
                    "tgt_lang": tgt,
                    "forced_bos_token_id": tgt_id,
                    "decoder_input_ids": dec[0].tolist(),
                    "logits": tensor_json(logits) if want_logits else None,
                    "greedy": greedy[0],
                    "greedy_text": tok.decode(greedy[0], skip_special_tokens=True),
                    "beam4": beam,
                    "beam4_text": tok.decode(beam, skip_special_tokens=True),
                }
            )
        cases.append(case)

    texts = [t for _, t in NLLB_CASES]
    benc = tok(texts, return_tensors="pt", padding=True)
    btgt = tok.convert_tokens_to_ids(NLLB_BATCH_TGT)
    bgreedy, bgap = nllb_greedy_gaps(model, benc, btgt)
    min_gap = min(min_gap, bgap)
    bbeam = nllb_generate(model, benc, btgt, 4).tolist()
    batch = {
        "src_lang": NLLB_SRC_LANG,
        "tgt_lang": NLLB_BATCH_TGT,
        "texts": texts,
        "input_ids": benc.input_ids.tolist(),
        "attention_mask": benc.attention_mask.tolist(),
        "greedy": bgreedy,
        "beam4": bbeam,
    }

    short = dict(NLLB_CASES)["short"]
    senc = tok(short, return_tensors="pt")
    fra = tok.convert_tokens_to_ids("fra_Latn")
    extra = []
    for eb in NLLB_EXTRA_BEAM:
        out = nllb_generate(
            model,
            senc,
            fra,
            eb["num_beams"],
            length_penalty=eb["length_penalty"],
            early_stopping=eb["early_stopping"],
            return_dict_in_generate=True,
            output_scores=True,
        )
        extra.append(
            {
                **eb,
                "sequences": out.sequences[0].tolist(),
                "sequence_score": fmt_float(out.sequences_scores[0]) if want_logits else None,
            }
        )
    return {"cases": cases, "batch": batch, "extra_beam": extra}, min_gap


def nllb_sequences(ref) -> list:
    """All token sequences of a reference dict, for comparisons."""
    seqs = []
    for c in ref["cases"]:
        for t in c["targets"]:
            seqs += [t["greedy"], t["beam4"]]
    seqs += ref["batch"]["greedy"] + ref["batch"]["beam4"]
    seqs += [e["sequences"] for e in ref["extra_beam"]]
    return seqs


def nllb_eos_stats(ref) -> dict:
    """How many outputs stop on EOS (their lengths, incl. the decoder start) and how many don't."""
    def lens(seqs):
        return [len([t for t in s if t != 1]) for s in seqs if nllb_ends_early(s)]

    g = [t["greedy"] for c in ref["cases"] for t in c["targets"]]
    b = [t["beam4"] for c in ref["cases"] for t in c["targets"]]
    return {
        "greedy_total": len(g),
        "greedy_eos_lens": lens(g),
        "beam4_total": len(b),
        "beam4_eos_lens": lens(b),
        "batch_total": len(ref["batch"]["greedy"]),
        "batch_greedy_eos_lens": lens(ref["batch"]["greedy"]),
        "batch_beam4_eos_lens": lens(ref["batch"]["beam4"]),
        "extra_beam_total": len(ref["extra_beam"]),
        "extra_beam_eos_lens": lens([e["sequences"] for e in ref["extra_beam"]]),
    }


def nllb_acceptable(st) -> bool:
    """A mix of outputs that stop on EOS (at varied lengths) and outputs that
    run to max_new_tokens, in every group of the reference."""
    def mixed(k, n, lo=0.2, hi=0.8):
        return lo * n <= k <= hi * n

    g = st["greedy_eos_lens"]
    return (
        mixed(len(g), st["greedy_total"])
        and len(set(g)) >= 3
        and sum(6 <= n < 1 + 1 + NLLB_MAX_NEW_TOKENS for n in g) >= 2  # some stop mid-way
        and mixed(len(st["beam4_eos_lens"]), st["beam4_total"])
        and 0 < len(st["batch_greedy_eos_lens"]) < st["batch_total"]
        and 0 < len(st["batch_beam4_eos_lens"]) < st["batch_total"]
        and 0 < len(st["extra_beam_eos_lens"]) < st["extra_beam_total"]
    )


def nllb_batch_matches_single(ref) -> dict:
    """Does each padded-batch row equal the unbatched hin_Deva result of the same text?"""
    per_case = {c["name"]: {t["tgt_lang"]: t for t in c["targets"]} for c in ref["cases"]}
    res = {"greedy": [], "beam4": []}
    for i, (name, _) in enumerate(NLLB_CASES):
        single = per_case[name][NLLB_BATCH_TGT]
        for k in ("greedy", "beam4"):
            row = ref["batch"][k][i]
            s = single[k]
            res[k].append(row[: len(s)] == s and all(t == 1 for t in row[len(s):]))
    return res


def cmd_nllb(args) -> None:
    torch = _import_ml()
    import transformers
    from transformers import GenerationConfig, NllbTokenizerFast

    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory(prefix="nllb-tiny-") as tmp:
        tmp = Path(tmp)
        spm_model = nllb_train_spm(tmp)
        slow, fast = nllb_build_tokenizers(spm_model)
        check_texts = [t for _, t in NLLB_CASES] + NLLB_CORPUS_EN + NLLB_CORPUS_OTHER
        nllb_check_tokenizers(slow, fast, check_texts, [NLLB_SRC_LANG] + NLLB_TGT_LANGS)
        print(f"tokenizer: spm pieces={slow.sp_model_size} len(tokenizer)={len(fast)}; slow == fast on "
              f"{len(check_texts)} texts x {1 + len(NLLB_TGT_LANGS)} src langs")

        config = nllb_tiny_config(len(fast))
        chosen = None
        for seed in NLLB_SEEDS:
            for eos_boost in NLLB_EOS_BOOSTS:
                model = nllb_tiny_model(config, seed, eos_boost)
                ref, gap = nllb_run_all(model, fast, want_logits=False)
                stats = nllb_eos_stats(ref)
                ok_gap = gap > NLLB_MIN_GAP
                ok_mix = nllb_acceptable(stats)
                print(f"seed={seed} eos_boost={eos_boost}: min_gap={gap:.4g} {stats}")
                if not (ok_gap and ok_mix):
                    continue
                # beam search has no single "gap"; require that float64 picks the same sequences
                torch.set_default_dtype(torch.float64)  # masks are built in the default dtype
                try:
                    ref64, _ = nllb_run_all(model.double(), fast, want_logits=False)
                finally:
                    torch.set_default_dtype(torch.float32)
                same64 = nllb_sequences(ref64) == nllb_sequences(ref)
                print(f"  float64 agreement: {same64}")
                if same64:
                    chosen = (seed, eos_boost, gap)
                    break
            if chosen:
                break
        if not chosen:
            raise SystemExit("no (seed, eos_boost) candidate passed the checks")
        seed, eos_boost, gap = chosen
        model = nllb_tiny_model(config, seed, eos_boost)
        ref, gap = nllb_run_all(model, fast, want_logits=True)

        # ------------------------------------------------------------------ save
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        model.save_pretrained(str(out), safe_serialization=True)
        fast.save_pretrained(str(out), legacy_format=False)
        for extra in ("sentencepiece.bpe.model", "added_tokens.json"):
            (out / extra).unlink(missing_ok=True)
        write_json(out / "generation_config.json", NLLB_GENERATION_CONFIG)
        copy_files = ["config.json", "generation_config.json", "tokenizer.json",
                      "tokenizer_config.json", "special_tokens_map.json"]
        for sub, kw in (("pytorch", {"safe_serialization": False}),
                        ("sharded", {"safe_serialization": True, "max_shard_size": "100KB"})):
            d = out / sub
            d.mkdir()
            model.save_pretrained(str(d), **kw)
            for f in copy_files:
                shutil.copyfile(out / f, d / f)

        # the saved folders must load back to the same model and tokenizer
        reloaded = NllbTokenizerFast.from_pretrained(str(out))
        for _, text in NLLB_CASES:
            assert reloaded(text).input_ids == fast(text).input_ids
        from transformers import M2M100ForConditionalGeneration
        for d in (out, out / "pytorch", out / "sharded"):
            m = M2M100ForConditionalGeneration.from_pretrained(str(d), attn_implementation="eager").eval()
            for (k, v), (k2, v2) in zip(sorted(model.state_dict().items()), sorted(m.state_dict().items())):
                assert k == k2 and torch.equal(v, v2), (d, k)
            assert GenerationConfig.from_pretrained(str(d)).max_length == 200
        # The variants differ only in their weight files: keep the tokenizer once, in the main folder
        # (the Rust tests assemble each variant folder from both).
        for sub in ("pytorch", "sharded"):
            for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                (out / sub / f).unlink()

        reference = {
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "max_new_tokens": NLLB_MAX_NEW_TOKENS,
            "seed": seed,
            "eos_boost": eos_boost,
            **ref,
        }
        write_json(out / "reference.json", reference, compact=True)

    # ------------------------------------------------------------------ report
    stats = nllb_eos_stats(ref)
    print(f"\nwrote {out}  ({dir_size(out)} bytes)")
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"  {p.relative_to(out)}  {p.stat().st_size}")
    print(f"seed={seed} eos_boost={eos_boost}  min greedy top1-top2 logit gap: {gap:.6g}")
    print(f"EOS before max_new_tokens: {stats}")
    print(f"padded batch rows == unbatched results: {nllb_batch_matches_single(ref)}")
    print(f"model.safetensors tensors: {safetensors_names(out / 'model.safetensors')}")
    sd = torch.load(out / "pytorch" / "pytorch_model.bin", map_location="cpu", weights_only=True)
    print(f"pytorch_model.bin tensors: {sorted(sd)}")
    index = json.loads((out / "sharded" / "model.safetensors.index.json").read_text())
    print(f"sharded: {sorted(set(index['weight_map'].values()))}")
    for c in ref["cases"]:
        print(f"  {c['name']}: {len(c['input_ids'])} input ids")
        for t in c["targets"]:
            print(f"    {t['tgt_lang']}: greedy {len(t['greedy'])} early={nllb_ends_early(t['greedy'])}"
                  f" | beam4 {len(t['beam4'])} early={nllb_ends_early(t['beam4'])}")
    print(f"sha256(reference.json) = {sha256(out / 'reference.json')}")
    print(f"sha256(model.safetensors) = {sha256(out / 'model.safetensors')}")


# --------------------------------------------------------------------------- #
# nllb-600m-random: full-size architecture, random weights (benchmarks only)
# --------------------------------------------------------------------------- #

def cmd_nllb_600m_random(args) -> None:
    torch = _import_ml()
    from transformers import GenerationConfig, M2M100Config, M2M100ForConditionalGeneration

    out = Path(args.out).resolve()
    tiny = Path(args.tokenizer_from).resolve()
    if not (tiny / "tokenizer.json").is_file():
        raise SystemExit(f"{tiny}/tokenizer.json missing: run `make_fixtures.py nllb` first")

    torch.manual_seed(args.seed)
    config = M2M100Config(**{k: v for k, v in NLLB_600M_CONFIG.items() if k not in ("max_length", "torch_dtype")})
    model = M2M100ForConditionalGeneration(config).eval()  # default init: normal(0, init_std=0.02)
    model.generation_config = GenerationConfig(**NLLB_GENERATION_CONFIG)
    n_params = sum(p.numel() for p in model.parameters())

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(str(out), safe_serialization=True, max_shard_size="10GB")
    # config.json as the real checkpoint has it (save_pretrained drops max_length)
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(NLLB_600M_CONFIG)
    write_json(out / "config.json", dict(sorted(cfg.items())))
    write_json(out / "generation_config.json", NLLB_GENERATION_CONFIG)
    # The real NLLB tokenizer (256204 entries) cannot be downloaded here. The tiny
    # fixture's tokenizer stands in: its ids are all < vocab_size (256206), so the
    # model accepts them; translations are meaningless anyway (random weights).
    for f in ("tokenizer.json", "special_tokens_map.json"):
        shutil.copyfile(tiny / f, out / f)
    tok_cfg = json.loads((tiny / "tokenizer_config.json").read_text(encoding="utf-8"))
    tok_cfg["model_max_length"] = 1024  # as in the real tokenizer_config.json
    write_json(out / "tokenizer_config.json", tok_cfg)

    print(f"wrote {out}: {n_params} parameters, {dir_size(out) / 1e9:.3f} GB")
    for p in sorted(out.iterdir()):
        print(f"  {p.name}  {p.stat().st_size}")
    names = safetensors_names(out / "model.safetensors")
    print(f"model.safetensors: {len(names)} tensors; embeddings: {[n for n in names if 'embed' in n or 'shared' in n or 'lm_head' in n]}")


# --------------------------------------------------------------------------- #
# mllama: tiny random Llama 3.2 Vision (Mllama) fixture
# --------------------------------------------------------------------------- #

MLLAMA_TINY_DIR = REPO_ROOT / "worker" / "tests" / "fixtures" / "mllama-tiny"
MLLAMA_TILE = 56  # vision_config.image_size = preprocessor size: 4x4 patches of 14 px per tile
MLLAMA_MAX_TILES = 4
MLLAMA_MAX_NEW_TOKENS = 20
MLLAMA_MIN_GAP = 1e-3
# The chat template's default `date_string` is strftime_now("%d %b %Y") (today): always pass
# this fixed value (it is also the template's own fallback when strftime_now is undefined).
MLLAMA_DATE_STRING = "26 Jul 2024"

# Extra training lines so that the prompts and typical chat phrases get merges.
MLLAMA_CORPUS_EXTRA = [
    "Describe this image.",
    "Describe this image in one sentence.",
    "The image shows a small house next to a lake.",
    "This image shows a banner with colourful text.",
    "List three tags for this banner, separated by commas.",
    "Tags: sale, shoes, summer.",
    "What is the capital of France? Answer in one word.",
    "The capital of France is Paris.",
    "What colours do you see in this small picture, and where is the bright spot?",
    "I see red, green and blue; the bright spot is in the top left corner.",
    "You are a helpful assistant.",
    "Cutting Knowledge Date: December 2023",
    "Today Date: 26 Jul 2024",
    "user assistant system ipython",
    "Sure! Here is a short description of the picture.",
    "There is a circle, a square and a line on a gradient background.",
]

# Llama 3's pre-tokenizer split regex (tokenizer.json of meta-llama/Llama-3.x).
MLLAMA_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
MLLAMA_BPE_VOCAB = 600  # byte alphabet (256) + merges

# Special tokens, in Llama 3's order (128000, 128001, ...), appended after the BPE vocabulary.
# <|image|> comes last, as in Llama 3.2 Vision (128256 there).
MLLAMA_SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|reserved_special_token_3|>",
    "<|reserved_special_token_4|>",
    "<|reserved_special_token_5|>",
    "<|reserved_special_token_6|>",
    "<|reserved_special_token_7|>",
    "<|image|>",
]

# chat_template of meta-llama/Llama-3.2-11B-Vision-Instruct (tokenizer_config.json and
# chat_template.json of the Hub repo, current revision: a user-supplied system message is allowed
# together with images; the first revision raised "Prompting with images is incompatible with
# system messages." instead). The line `{% set image_ns ... %}` ends with 6 spaces in the original.
MLLAMA_CHAT_TEMPLATE = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
    {%- set user_supplied_system_message = true %}
{%- else %}
    {%- set system_message = "" %}
    {%- set user_supplied_system_message = false %}
{%- endif %}

{#- Find out if there are any images #}
{% set image_ns = namespace(has_images=false) %}@@TRAILING_WS@@
{%- for message in messages %}
    {%- for content in message['content'] %}
        {%- if content['type'] == 'image' %}
            {%- set image_ns.has_images = true %}
        {%- endif %}
    {%- endfor %}
{%- endfor %}

{#- System message if there are no images, or if the user supplied one #}
{%- if user_supplied_system_message or not image_ns.has_images %}
    {{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
    {%- if tools is not none %}
        {{- "Environment: ipython\n" }}
    {%- endif %}
    {{- "Cutting Knowledge Date: December 2023\n" }}
    {{- "Today Date: " + date_string + "\n\n" }}
    {%- if tools is not none and not tools_in_user_message %}
        {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
        {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
        {{- "Do not use variables.\n\n" }}
        {%- for t in tools %}
            {{- t | tojson(indent=4) }}
            {{- "\n\n" }}
        {%- endfor %}
    {%- endif %}
    {{- system_message }}
    {{- "<|eot_id|>" }}
{%- endif %}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}
        {%- if message['content'] is string %}
            {{- message['content'] }}
        {%- else %}
            {%- for content in message['content'] %}
                {%- if content['type'] == 'image' %}
                    {{- '<|image|>' }}
                {%- elif content['type'] == 'text' %}
                    {{- content['text'] }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
""".replace("@@TRAILING_WS@@", " " * 6)

# preprocessor_config.json of meta-llama/Llama-3.2-11B-Vision-Instruct, with 56 px tiles instead of 560.
MLLAMA_PREPROCESSOR_CONFIG = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_pad": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],  # OPENAI_CLIP_MEAN
    "image_processor_type": "MllamaImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],  # OPENAI_CLIP_STD
    "max_image_tiles": MLLAMA_MAX_TILES,
    "processor_class": "MllamaProcessor",
    "resample": 2,  # PIL BILINEAR
    "rescale_factor": 1 / 255,
    "size": {"height": MLLAMA_TILE, "width": MLLAMA_TILE},
}

# Test images: (file name, PIL mode as saved, (width, height), what it exercises).
MLLAMA_IMAGES = [
    ("landscape.png", "RGB", (150, 90), "RGB PNG, wider than tall"),
    ("portrait.jpg", "RGB", (70, 130), "RGB JPEG (quality 90), taller than wide"),
    ("square_small.png", "RGB", (40, 40), "smaller than one tile: upscaled"),
    ("wide.png", "RGB", (230, 50), "extreme aspect ratio: 1x4 tiles"),
    ("gray.png", "L", (56, 200), "8-bit grayscale, tall: 4x1 tiles"),
    ("rgba.png", "RGBA", (50, 100), "alpha channel (composited on white by the processor)"),
    ("palette.png", "P", (160, 56), "palette image with a transparent index"),
    ("cmyk.jpg", "CMYK", (40, 150), "CMYK JPEG (Adobe marker)"),
    ("gray16.png", "I;16", (64, 48), "16-bit grayscale PNG (PIL clamps to 255 when converting)"),
    ("exif_rotated.jpg", "RGB", (80, 50), "EXIF Orientation=6, NOT applied by the reference"),
]

# Prompt cases. `content` is the user message content (a list of typed items, as the processor's
# chat template expects); `image` is the stem of the image passed with it (None: text only).
MLLAMA_CASES = [
    {
        "name": "describe_landscape",
        "image": "landscape",
        "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}],
    },
    {
        "name": "describe_portrait",
        "image": "portrait",
        "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}],
    },
    {
        # text first, then the image: the tokens before <|image|> have no image to attend to
        "name": "tags_wide",
        "image": "wide",
        "content": [
            {"type": "text", "text": "List three tags for this banner, separated by commas."},
            {"type": "image"},
        ],
    },
    {
        "name": "text_only",
        "image": None,
        "content": [{"type": "text", "text": "What is the capital of France? Answer in one word."}],
    },
]
MLLAMA_BATCH = [
    {"image": "landscape", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]},
    {
        "image": "square_small",
        "content": [
            {"type": "image"},
            {"type": "text", "text": "What colours do you see in this small picture, and where is the bright spot?"},
        ],
    },
]
MLLAMA_REPETITION_PENALTY = 1.3
# cases whose raw logits at every greedy step (KV-cached decoding) are stored
MLLAMA_STEP_LOGITS = ("describe_landscape", "text_only", "batch")

# Candidates tried in order; the first that passes the checks of cmd_mllama is used.
MLLAMA_SEEDS = [3210, 3211, 3212, 3213, 3214, 3215, 3216, 3217]
MLLAMA_EOT_BOOSTS = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
MLLAMA_MIN_DISTINCT = 4  # every generated row has at least this many different tokens


def mllama_make_images(d: Path) -> None:
    """Write the test images. Smooth gradients + shapes + a band of blocky noise (so that
    resampling matters but the files stay small). Deterministic for a given Pillow version."""
    import numpy as np
    from PIL import Image, ImageDraw

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.Generator(np.random.PCG64(20240925))

    def base_rgb(w, h):
        x = np.linspace(0.0, 1.0, w)[None, :]
        y = np.linspace(0.0, 1.0, h)[:, None]
        r = 30 + 200 * x + 0 * y
        g = 40 + 160 * y + 30 * np.sin(6.0 * x) + 0 * x
        b = 200 - 120 * x * y + 20 * np.cos(9.0 * y)
        img = np.stack([r, g, b], axis=-1)
        # blocky noise (3x3 blocks) in the middle third of the rows
        nh, nw = (h + 2) // 3, (w + 2) // 3
        noise = rng.integers(-24, 25, size=(nh, nw, 3)).repeat(3, 0).repeat(3, 1)[:h, :w]
        band = slice(h // 3, 2 * h // 3)
        img[band] += noise[band]
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)

    def shapes(im, w, h, fill_a, fill_b):
        dr = ImageDraw.Draw(im)
        dr.ellipse([w * 0.08, h * 0.1, w * 0.38, h * 0.45], fill=fill_a)
        dr.rectangle([w * 0.55, h * 0.55, w * 0.9, h * 0.9], fill=fill_b)
        dr.line([0, h - 1, w - 1, 0], fill=fill_a, width=2)
        return im

    def rgb_image(w, h):
        im = Image.fromarray(base_rgb(w, h), "RGB")
        return shapes(im, w, h, (250, 240, 40), (20, 20, 90))

    rgb_image(150, 90).save(d / "landscape.png")
    rgb_image(70, 130).save(d / "portrait.jpg", quality=90)
    small = rgb_image(40, 40)
    ImageDraw.Draw(small).ellipse([4, 4, 12, 12], fill=(255, 255, 255))  # "bright spot" top left
    small.save(d / "square_small.png")
    rgb_image(230, 50).save(d / "wide.png")

    gray = Image.fromarray(base_rgb(56, 200)[..., 1], "L")
    shapes(gray, 56, 200, 250, 10).save(d / "gray.png")

    rgba = np.concatenate([base_rgb(50, 100), np.zeros((100, 50, 1), np.uint8)], axis=-1)
    alpha = np.clip(np.rint(np.linspace(0, 255, 50))[None, :] + 0 * np.arange(100)[:, None], 0, 255)
    rgba[..., 3] = alpha.astype(np.uint8)
    rgba[60:80, 10:40, 3] = 0  # fully transparent block (its RGB is noise, hidden by alpha)
    rgba[10:30, 10:40, 3] = 255  # fully opaque block
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")

    pal = rgb_image(160, 56).quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    pal.save(d / "palette.png", transparency=int(np.asarray(pal)[0, 0]))  # the top-left colour is transparent

    cmyk = np.concatenate([base_rgb(40, 150), np.zeros((150, 40, 1), np.uint8)], axis=-1)
    cmyk[..., 3] = np.clip(np.linspace(0, 160, 150), 0, 255).astype(np.uint8)[:, None]
    Image.fromarray(cmyk, "CMYK").save(d / "cmyk.jpg", quality=90)

    x = np.linspace(0, 1023, 64)[None, :]
    y = np.linspace(0, 60000, 48)[:, None]
    g16 = np.where(np.arange(48)[:, None] < 24, x + 0 * y, y + 0 * x)  # top: 0..1023, bottom: 0..60000
    Image.fromarray(np.rint(g16).astype(np.uint16)).save(d / "gray16.png")  # mode I;16

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    rgb_image(80, 50).save(d / "exif_rotated.jpg", quality=90, exif=exif)

    for name, mode, size, _ in MLLAMA_IMAGES:
        with Image.open(d / name) as im:
            if im.mode != mode or im.size != size:
                raise SystemExit(f"{name}: opened as {im.mode} {im.size}, expected {mode} {size}")


def mllama_train_tokenizer():
    """Byte-level BPE with Llama 3's pre-tokenizer / decoder / post-processor, plus Llama 3's
    special tokens (and <|image|>), wrapped as PreTrainedTokenizerFast like the real repo."""
    import json as _json

    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(MLLAMA_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=MLLAMA_BPE_VOCAB,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    # the chat phrases 3 times, so that the template's words ("user", "assistant", "Cutting
    # Knowledge Date", ...) get merges and the prompts stay short
    tok.train_from_iterator(NLLB_CORPUS_EN + MLLAMA_CORPUS_EXTRA * 3, trainer=trainer)
    # the trainer does not keep every model option: set Llama 3's explicitly
    spec = _json.loads(tok.to_str())
    spec["model"]["ignore_merges"] = True
    spec["model"]["fuse_unk"] = False
    spec["model"]["byte_fallback"] = False
    tok = Tokenizer.from_str(_json.dumps(spec))
    n_bpe = tok.get_vocab_size()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in MLLAMA_SPECIAL_TOKENS])
    bos = "<|begin_of_text|>"
    bos_id = tok.token_to_id(bos)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
            processors.TemplateProcessing(
                single=f"{bos}:0 $A:0",
                pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                special_tokens=[(bos, bos_id)],
            ),
        ]
    )
    for i, t in enumerate(MLLAMA_SPECIAL_TOKENS):
        assert tok.token_to_id(t) == n_bpe + i, t
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        model_max_length=512,  # = max_position_embeddings (the real one says 131072, its own)
        padding_side="left",  # batched generation (the processor ignores a padding_side kwarg)
        clean_up_tokenization_spaces=True,
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.chat_template = MLLAMA_CHAT_TEMPLATE
    return fast


def mllama_tiny_config(tok):
    from transformers import MllamaConfig

    vocab = len(tok)
    ids = {t: tok.convert_tokens_to_ids(t) for t in MLLAMA_SPECIAL_TOKENS}
    vision = {
        "hidden_size": 32,
        "hidden_act": "gelu",
        "num_hidden_layers": 3,
        "num_global_layers": 2,
        "attention_heads": 4,
        "num_attention_heads": 4,
        "num_channels": 3,
        "intermediate_size": 64,
        "vision_output_dim": 32 * 3,  # hidden_size * (len(intermediate_layers_indices) + 1)
        "image_size": MLLAMA_TILE,
        "patch_size": 14,
        "norm_eps": 1e-5,
        "max_num_tiles": MLLAMA_MAX_TILES,
        "intermediate_layers_indices": [0, 2],
        "supported_aspect_ratios": None,  # derived: [[1,1],[1,2],[1,3],[1,4],[2,1],[2,2],[3,1],[4,1]]
        "initializer_range": 0.02,
    }
    text = {
        "vocab_size": vocab,
        "hidden_size": 64,
        "hidden_act": "silu",
        "num_hidden_layers": 5,
        "cross_attention_layers": [1, 3],
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 96,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "factor": 8.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 64,
            "rope_type": "llama3",
        },
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 512,
        "initializer_range": 0.02,
        "use_cache": True,
        "tie_word_embeddings": False,
        "dropout": 0.0,
        "bos_token_id": ids["<|begin_of_text|>"],
        "eos_token_id": [ids["<|end_of_text|>"], ids["<|eom_id|>"], ids["<|eot_id|>"]],
        "pad_token_id": ids["<|finetune_right_pad_id|>"],
    }
    config = MllamaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids["<|image|>"],
        architectures=["MllamaForConditionalGeneration"],
        torch_dtype="float32",
    )
    # plain softmax(QK^T)V attention everywhere for the references
    for c in (config, config.vision_config, config.text_config):
        c._attn_implementation = "eager"
    return config


def mllama_generation_config(config) -> dict:
    # generation_config.json of meta-llama/Llama-3.2-11B-Vision-Instruct (ids remapped)
    t = config.text_config
    return {
        "bos_token_id": t.bos_token_id,
        "do_sample": True,
        "eos_token_id": list(t.eos_token_id),
        "pad_token_id": t.pad_token_id,
        "temperature": 0.6,
        "top_p": 0.9,
    }


def mllama_is_gate(name: str) -> bool:
    return name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate", "gate_attn", "gate_ffn", ".gate"))


def mllama_tiny_model(config, seed: int):
    """Random tiny Mllama with spread-out logits and every gate open.

    transformers' init (std 0.02, zero gates for cross-attention / tile embeddings) gives flat
    logits and switches the image path off, so instead:
      * every gate (cross_attn_attn_gate, cross_attn_mlp_gate, vision gate_attn / gate_ffn,
        pre/post tile and gated positional embedding gates) = +-U(0.5, 1.5), random sign;
      * linear weights N(0, 1/fan_in) (unit-variance outputs), biases N(0, 0.1);
      * embeddings, class / position / tile embeddings N(0, 0.5..1);
      * LayerNorm / RMSNorm weights N(1, 0.1), LayerNorm biases N(0, 0.1); the cross-attention
        q_norm / k_norm weights N(1.5, 0.3) (sharper attention over the image tokens);
      * lm_head N(0, 0.4): logits with std ~3.
    """
    import torch
    from transformers import GenerationConfig, MllamaForConditionalGeneration

    torch.manual_seed(seed)
    model = MllamaForConditionalGeneration(config)
    g = torch.Generator().manual_seed(seed)

    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=g, dtype=torch.float32) * std + mean

    with torch.no_grad():
        for name, p in model.named_parameters():  # deterministic order
            if mllama_is_gate(name):
                mag = torch.rand(p.shape, generator=g) + 0.5
                sign = torch.where(torch.rand(p.shape, generator=g) < 0.5, -1.0, 1.0)
                p.copy_(mag * sign)
            elif name.endswith(("q_norm.weight", "k_norm.weight")):
                p.copy_(normal(p.shape, 0.3, 1.5))
            elif "layernorm" in name or name.endswith("norm.weight"):
                p.copy_(normal(p.shape, 0.1, 1.0) if name.endswith("weight") else normal(p.shape, 0.1))
            elif name == "language_model.lm_head.weight":
                p.copy_(normal(p.shape, 0.4))
            elif name == "language_model.model.embed_tokens.weight":
                p.copy_(normal(p.shape, 1.0))
            elif name == "vision_model.class_embedding":
                p.copy_(normal(p.shape, 1.0))
            elif name in ("vision_model.gated_positional_embedding.embedding",):
                p.copy_(normal(p.shape, 0.5))
            elif name.endswith(("tile_embedding.weight", "positional_embedding.embedding.weight")):
                p.copy_(normal(p.shape, 0.5))
            elif name.endswith(".weight") and p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(normal(p.shape, 1.0 / math.sqrt(fan_in)))
            elif name.endswith(".bias"):
                p.copy_(normal(p.shape, 0.1))
            else:
                raise RuntimeError(f"unexpected parameter {name} {tuple(p.shape)}")
    model.generation_config = GenerationConfig(**mllama_generation_config(config))
    model.eval()
    return model


def mllama_boost_eot(model, probe_hidden, boost: float) -> None:
    """Add `boost` (on average over `probe_hidden`) to the <|eot_id|> logit.

    logits = lm_head(norm(h)) has no bias; adding boost * m / |m|^2 to the <|eot_id|> row, with
    m the mean final normed hidden state of probe runs, raises that logit by boost * <x, m>/|m|^2
    (= boost on average over the probe positions)."""
    import torch

    if boost == 0.0:
        return
    m = probe_hidden.reshape(-1, probe_hidden.shape[-1]).mean(0)
    eot = model.config.text_config.eos_token_id[-1]
    with torch.no_grad():
        model.language_model.lm_head.weight[eot] += boost * m / m.dot(m)


def mllama_processor(tok):
    from transformers import MllamaImageProcessor, MllamaProcessor

    ip_kwargs = {k: v for k, v in MLLAMA_PREPROCESSOR_CONFIG.items() if k not in ("image_processor_type", "processor_class")}
    image_processor = MllamaImageProcessor(**ip_kwargs)
    # transformers 4.46.3's MllamaProcessor.__init__(image_processor, tokenizer) takes no chat_template
    # argument, and the tokenizer.chat_template it copies is reset to None by ProcessorMixin.__init__:
    # set it afterwards, as MllamaProcessor.from_pretrained does with chat_template.json.
    processor = MllamaProcessor(image_processor, tok)
    processor.chat_template = MLLAMA_CHAT_TEMPLATE
    return processor


def mllama_prompt(processor, content) -> str:
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, date_string=MLLAMA_DATE_STRING)


def mllama_encode(processor, img_dir: Path, items: list):
    """processor(images, text) for a list of {"image", "content"} items (one row each).

    As on the model card, the chat-templated text already starts with <|begin_of_text|>, so the
    tokenizer must not add another one: add_special_tokens=False."""
    from PIL import Image

    texts = [mllama_prompt(processor, it["content"]) for it in items]
    images = None
    if items[0]["image"] is not None:
        images = [[Image.open(img_dir / mllama_image_file(it["image"]))] for it in items]
    enc = processor(
        images=images if images is None or len(items) > 1 else images[0],
        text=texts if len(items) > 1 else texts[0],
        add_special_tokens=False,
        padding=len(items) > 1,
        return_tensors="pt",
    )
    return texts, enc


def mllama_image_file(stem: str) -> str:
    for name, *_ in MLLAMA_IMAGES:
        if Path(name).stem == stem:
            return name
    raise KeyError(stem)


def mllama_image_refs(processor, img_dir: Path):
    """What MllamaImageProcessor makes of every test image (PIL.Image.open, no EXIF transpose)."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers.image_transforms import resize as hf_resize
    from transformers.image_utils import ChannelDimension
    from transformers.models.mllama.image_processing_mllama import (
        convert_to_rgb,
        get_image_size_fit_to_canvas,
        get_optimal_tiled_canvas,
    )

    ip = processor.image_processor
    tensors, meta = {}, {}
    for name, mode, size, note in MLLAMA_IMAGES:
        stem = Path(name).stem
        with Image.open(img_dir / name) as im:
            im.load()
            raw_mode, raw_size = im.mode, im.size
            exif_orientation = im.getexif().get(0x0112)
            out = ip(im, return_tensors="pt")
            rgb = np.asarray(convert_to_rgb(im))
        h, w = rgb.shape[:2]
        canvas_h, canvas_w = (int(v) for v in get_optimal_tiled_canvas(h, w, MLLAMA_MAX_TILES, MLLAMA_TILE))
        new_h, new_w = (int(v) for v in get_image_size_fit_to_canvas(h, w, canvas_h, canvas_w, MLLAMA_TILE))
        resized = hf_resize(
            rgb.transpose(2, 0, 1), (new_h, new_w), resample=ip.resample,
            data_format=ChannelDimension.LAST, input_data_format=ChannelDimension.FIRST,
        )
        pv = out["pixel_values"]
        tensors[f"image.{stem}.pixel_values"] = pv.float().contiguous()
        tensors[f"image.{stem}.aspect_ratio_ids"] = out["aspect_ratio_ids"].to(torch.int64).contiguous()
        tensors[f"image.{stem}.aspect_ratio_mask"] = out["aspect_ratio_mask"].to(torch.int64).contiguous()
        names = ["pixel_values", "aspect_ratio_ids", "aspect_ratio_mask"]
        # The decoded + RGB-converted pixels (before resizing) where decoding or the conversion is
        # not trivial, i.e. all but the RGB PNGs. (The resized pixels follow from pixel_values:
        # round((x * std + mean) * 255) over the resized_hw corner.)
        if not (raw_mode == "RGB" and name.endswith(".png")):
            tensors[f"image.{stem}.rgb"] = torch.from_numpy(np.array(rgb, dtype=np.uint8))
            names.append("rgb")
        num_tiles = int(out["num_tiles"][0][0])
        meta[stem] = {
            "file": f"images/{name}",
            "note": note,
            "sha256": sha256(img_dir / name),
            "pil_mode": raw_mode,
            "pil_size_wh": list(raw_size),
            "exif_orientation": exif_orientation,
            "canvas_hw": [canvas_h, canvas_w],
            "tiles_hw": [canvas_h // MLLAMA_TILE, canvas_w // MLLAMA_TILE],
            "resized_hw": [new_h, new_w],
            "num_tiles": num_tiles,
            "aspect_ratio_id": int(out["aspect_ratio_ids"][0, 0]),
            "aspect_ratio_mask": out["aspect_ratio_mask"][0, 0].tolist(),
            "pixel_values_shape": list(pv.shape),
            "tensors": [f"image.{stem}.{k}" for k in names],
        }
        # the resized image is the top-left corner of the (un-normalised) canvas
        mean = np.array(ip.image_mean, np.float32)[:, None, None]
        std = np.array(ip.image_std, np.float32)[:, None, None]
        canvas = pv[0, 0, :num_tiles].numpy()  # [tiles, 3, 56, 56] -> [3, canvas_h, canvas_w]
        th, tw = meta[stem]["tiles_hw"]
        canvas = canvas.reshape(th, tw, 3, MLLAMA_TILE, MLLAMA_TILE).transpose(2, 0, 3, 1, 4)
        canvas = canvas.reshape(3, th * MLLAMA_TILE, tw * MLLAMA_TILE)
        back = np.rint((canvas * std + mean) * 255).astype(np.int64)
        assert np.array_equal(back[:, :new_h, :new_w], resized.transpose(2, 0, 1).astype(np.int64)), stem
        assert (back[:, new_h:, :] == 0).all() and (back[:, :, new_w:] == 0).all(), stem
        assert pv.shape[2] == MLLAMA_MAX_TILES and num_tiles == meta[stem]["tiles_hw"][0] * meta[stem]["tiles_hw"][1]
    return tensors, meta


def mllama_vision_states(model, enc):
    """cross_attention_states exactly as MllamaForConditionalGeneration.forward computes them."""
    import torch

    with torch.no_grad():
        vision = model.vision_model(
            pixel_values=enc["pixel_values"],
            aspect_ratio_ids=enc["aspect_ratio_ids"],
            aspect_ratio_mask=enc["aspect_ratio_mask"],
        )[0]
        states = model.multi_modal_projector(vision).reshape(-1, vision.shape[-2], model.hidden_size)
    return vision, states


def mllama_generate(model, enc, **kw):
    import torch

    with torch.no_grad():
        return model.generate(
            **enc,
            max_new_tokens=MLLAMA_MAX_NEW_TOKENS,
            do_sample=False,
            temperature=None,
            top_p=None,
            return_dict_in_generate=True,
            output_logits=True,
            output_scores=True,
            **kw,
        )


def mllama_gaps(out, prompt_len: int, eos: list) -> float:
    """Smallest top1-top2 gap of the processed scores over all greedy steps of unfinished rows."""
    import torch

    seqs = out.sequences
    gap = float("inf")
    for step, scores in enumerate(out.scores):
        for row in range(scores.shape[0]):
            if any(t in eos for t in seqs[row, prompt_len: prompt_len + step].tolist()):
                continue
            top = torch.topk(scores[row].float(), 2).values
            gap = min(gap, float(top[0] - top[1]))
    return gap


def mllama_ends_early(new_tokens: list, eos: list, pad: int) -> bool:
    body = [t for t in new_tokens if t != pad]
    return len(body) < MLLAMA_MAX_NEW_TOKENS and bool(body) and body[-1] in eos


def mllama_run_all(model, processor, img_dir: Path, want_tensors: bool):
    """All prompt cases: (json part, tensors, min greedy gap, final hidden states of the prompts)."""
    import torch

    tok = processor.tokenizer
    eos = list(model.config.text_config.eos_token_id)
    pad = model.config.text_config.pad_token_id
    tensors, cases, probe = {}, [], []
    min_gap = float("inf")

    def one(name, items, gen_kw=None, store=True):
        nonlocal min_gap
        texts, enc = mllama_encode(processor, img_dir, items)
        ids = enc["input_ids"]
        seq = ids.shape[1]
        has_image = "pixel_values" in enc
        fwd = dict(enc)
        if ids.shape[0] > 1:
            # positions as generate() derives them from the (left-padded) attention mask
            pos = enc["attention_mask"].long().cumsum(-1) - 1
            pos.masked_fill_(enc["attention_mask"] == 0, 1)
            fwd["position_ids"] = pos
        with torch.no_grad():
            fo = model(**fwd, output_hidden_states=True)
        logits = fo.logits
        probe.append(fo.hidden_states[-1][enc["attention_mask"].bool()])
        out = mllama_generate(model, enc, **(gen_kw or {}))
        gap = mllama_gaps(out, seq, eos)
        min_gap = min(min_gap, gap)
        new = out.sequences[:, seq:].tolist()
        case = {
            "name": name,
            "prompt": texts if len(texts) > 1 else texts[0],
            "images": [it["image"] for it in items] if len(items) > 1 else items[0]["image"],
            "content": [it["content"] for it in items] if len(items) > 1 else items[0]["content"],
            "generate_kwargs": {"max_new_tokens": MLLAMA_MAX_NEW_TOKENS, "do_sample": False, **(gen_kw or {})},
            "input_ids": ids.tolist() if len(items) > 1 else ids[0].tolist(),
            "input_len": seq,
            "attention_mask": enc["attention_mask"].tolist() if len(items) > 1 else enc["attention_mask"][0].tolist(),
            "image_token_positions": [[i for i, t in enumerate(r) if t == model.config.image_token_index]
                                      for r in ids.tolist()],
            "generated": new if len(items) > 1 else new[0],
            "sequences": out.sequences.tolist() if len(items) > 1 else out.sequences[0].tolist(),
            "text": [tok.decode(n, skip_special_tokens=True) for n in new] if len(items) > 1
            else tok.decode(new[0], skip_special_tokens=True),
            "text_tokenizers_decode": [tok.backend_tokenizer.decode(n, skip_special_tokens=True) for n in new]
            if len(items) > 1 else tok.backend_tokenizer.decode(new[0], skip_special_tokens=True),
            "ends_early": [mllama_ends_early(n, eos, pad) for n in new] if len(items) > 1
            else mllama_ends_early(new[0], eos, pad),
            "min_greedy_gap": fmt_float(gap),
            "tensors": [],
        }
        if store and want_tensors:
            # To keep the folder small, inputs shared with an earlier case are not stored again:
            # repetition_penalty has the inputs of describe_landscape (only its scores are stored);
            # the batch's vision rows are those of its images (only the projected states are stored).
            p = f"case.{name}."
            t = {
                p + "input_ids": ids.to(torch.int64),
                p + "attention_mask": enc["attention_mask"].to(torch.int64),
                p + "logits_last": logits[:, -1].float(),
            }
            if gen_kw:
                t = {p + "generate_scores": torch.stack(out.scores, 0).float()}  # after the logits processors
            elif name in MLLAMA_STEP_LOGITS:
                t[p + "generate_logits"] = torch.stack(out.logits, 0).float()  # [steps, batch, vocab], raw
            if len(items) > 1:
                t[p + "position_ids"] = fwd["position_ids"].to(torch.int64)
            elif not gen_kw:
                t[p + "logits"] = logits.float()  # all positions
            if has_image and not gen_kw:
                vision, states = mllama_vision_states(model, enc)
                t[p + "cross_attention_mask"] = enc["cross_attention_mask"].to(torch.int64)
                t[p + "cross_attention_states"] = states.float()
                if len(items) == 1:
                    t[p + "vision_output"] = vision.float()
            tensors.update({k: v.detach().clone().contiguous() for k, v in t.items()})
            case["tensors"] = sorted(t)
        cases.append(case)
        return case

    singles = {}
    for c in MLLAMA_CASES:
        singles[c["name"]] = one(c["name"], [c])
    b = one("batch", MLLAMA_BATCH)
    b["padding_side"] = processor.tokenizer.padding_side
    b["alone"] = []
    for i, it in enumerate(MLLAMA_BATCH):
        a = one(f"batch_row{i}_alone", [it], store=False)
        cases.pop()
        row = b["generated"][i]
        b["alone"].append({"input_ids": a["input_ids"], "generated": a["generated"],
                           "matches_batch_row": row[: len(a["generated"])] == a["generated"]
                           and all(t == pad for t in row[len(a["generated"]):])})
    one("repetition_penalty", [MLLAMA_CASES[0]], gen_kw={"repetition_penalty": MLLAMA_REPETITION_PENALTY})
    return cases, tensors, min_gap, torch.cat(probe, 0)


def mllama_min_distinct(cases) -> int:
    """Fewest distinct tokens in one generated row (random models love loops of 1-2 tokens)."""
    rows = []
    for c in cases:
        rows += c["generated"] if isinstance(c["generated"][0], list) else [c["generated"]]
    return min(len(set(r)) for r in rows)


def mllama_sequences(cases) -> list:
    """Generated ids for the float64 comparison. The padded batch is left out: in float64 its
    fully masked (padding) query rows become NaN (finfo(float64).min turns into -inf in the eager
    attention's float32 softmax) and the NaN spreads; its rows are compared to the unbatched runs
    (`alone`) in float32 instead, and those are compared here."""
    seqs = []
    for c in cases:
        if c["name"] != "batch":
            seqs.append(c["generated"])
        for a in c.get("alone", []):
            seqs.append(a["generated"])
    return seqs


def mllama_rope_check(config) -> dict:
    """Which llama3 rope frequencies are kept, divided by `factor`, or interpolated."""
    import torch
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    t = config.text_config
    inv, scaling = ROPE_INIT_FUNCTIONS["default"](t, None)
    inv3, scaling3 = ROPE_INIT_FUNCTIONS["llama3"](t, None)
    rs = t.rope_scaling
    hi = rs["original_max_position_embeddings"] / rs["high_freq_factor"]
    lo = rs["original_max_position_embeddings"] / rs["low_freq_factor"]
    kinds = []
    for a, b in zip(inv.tolist(), inv3.tolist()):
        wl = 2 * math.pi / a
        kinds.append("kept" if wl < hi else "divided_by_factor" if wl > lo else "interpolated")
    assert {"kept", "divided_by_factor", "interpolated"} <= set(kinds), kinds
    return {
        "head_dim": t.hidden_size // t.num_attention_heads,
        "high_freq_wavelen": hi,
        "low_freq_wavelen": lo,
        "inv_freq_default": [fmt_float(v) for v in inv.tolist()],
        "inv_freq_llama3": [fmt_float(v) for v in inv3.tolist()],
        "wavelen_default": [fmt_float(2 * math.pi / v) for v in inv.tolist()],
        "kind": kinds,
        "attention_scaling": scaling3,
    }


def mllama_check_text_only_skips_cross(model, processor, img_dir: Path) -> dict:
    """Run text_only and record which decoder layers ran (forward hooks)."""
    import torch

    ran = []
    hooks = [layer.register_forward_hook(lambda m, i, o, idx=idx: ran.append(idx))
             for idx, layer in enumerate(model.language_model.model.layers)]
    try:
        case = next(c for c in MLLAMA_CASES if c["image"] is None)
        _, enc = mllama_encode(processor, img_dir, [case])
        with torch.no_grad():
            model(**enc)
    finally:
        for h in hooks:
            h.remove()
    return {"inputs": sorted(enc.keys()), "layers_run": ran,
            "cross_attention_layers": list(model.config.text_config.cross_attention_layers)}


def cmd_mllama(args) -> None:
    torch = _import_ml()
    import transformers
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import GenerationConfig, MllamaForConditionalGeneration, MllamaProcessor

    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory(prefix="mllama-tiny-") as tmp:
        tmp = Path(tmp)
        img_dir = tmp / "images"
        mllama_make_images(img_dir)
        tok = mllama_train_tokenizer()
        processor = mllama_processor(tok)
        config = mllama_tiny_config(tok)
        print(f"tokenizer: len={len(tok)} image_token_index={config.image_token_index} "
              f"eos={config.text_config.eos_token_id} pad={config.text_config.pad_token_id}")

        chosen = None
        for seed in MLLAMA_SEEDS:
            base = mllama_tiny_model(config, seed)
            _, _, _, probe = mllama_run_all(base, processor, img_dir, want_tensors=False)
            for boost in MLLAMA_EOT_BOOSTS:
                model = mllama_tiny_model(config, seed)
                mllama_boost_eot(model, probe, boost)
                cases, _, gap, _ = mllama_run_all(model, processor, img_dir, want_tensors=False)
                early = [e for c in cases for e in (c["ends_early"] if isinstance(c["ends_early"], list)
                                                     else [c["ends_early"]])]
                batch_ok = all(a["matches_batch_row"] for c in cases for a in c.get("alone", []))
                distinct = mllama_min_distinct(cases)
                print(f"seed={seed} eot_boost={boost}: min_gap={gap:.4g} ends_early={early} "
                      f"batch==single={batch_ok} min_distinct={distinct}")
                if not (gap > MLLAMA_MIN_GAP and batch_ok and 0 < sum(early) < len(early)
                        and distinct >= MLLAMA_MIN_DISTINCT):
                    continue
                torch.set_default_dtype(torch.float64)  # masks are built in the default dtype
                try:
                    cases64, _, _, _ = mllama_run_all(model.double(), processor, img_dir, want_tensors=False)
                finally:
                    torch.set_default_dtype(torch.float32)
                model.float()
                same64 = mllama_sequences(cases64) == mllama_sequences(cases)
                print(f"  float64 agreement: {same64}")
                if same64:
                    chosen = (seed, boost)
                    break
            if chosen:
                break
        if not chosen:
            raise SystemExit("no (seed, eot_boost) candidate passed the checks")
        seed, boost = chosen
        base = mllama_tiny_model(config, seed)
        _, _, _, probe = mllama_run_all(base, processor, img_dir, want_tensors=False)
        model = mllama_tiny_model(config, seed)
        mllama_boost_eot(model, probe, boost)
        cases, case_tensors, gap, _ = mllama_run_all(model, processor, img_dir, want_tensors=True)
        image_tensors, image_meta = mllama_image_refs(processor, img_dir)
        rope = mllama_rope_check(config)
        text_only = mllama_check_text_only_skips_cross(model, processor, img_dir)

        # ------------------------------------------------------------------ save
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        model.save_pretrained(str(out), safe_serialization=True, max_shard_size="500KB")
        # transformers 4.46 leaks a private `_attn_implementation_autoset` into the sub-configs
        # (from setting eager attention above); the real config.json has no such key
        cfg = json.loads((out / "config.json").read_text())
        for sub in ("text_config", "vision_config"):
            cfg[sub].pop("_attn_implementation_autoset", None)
        (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        write_json(out / "generation_config.json", mllama_generation_config(config))
        processor.save_pretrained(str(out))  # tokenizer files, preprocessor_config.json, chat_template.json
        shutil.copytree(img_dir, out / "images")
        # preprocessor_config.json exactly as the real one is laid out (save_pretrained adds nothing else)
        pp = json.loads((out / "preprocessor_config.json").read_text())
        assert {k: pp[k] for k in MLLAMA_PREPROCESSOR_CONFIG} == MLLAMA_PREPROCESSOR_CONFIG, pp

        # the saved folder must load back to the same model, tokenizer and processor
        m = MllamaForConditionalGeneration.from_pretrained(str(out), attn_implementation="eager").eval()
        for (k, v), (k2, v2) in zip(sorted(model.state_dict().items()), sorted(m.state_dict().items())):
            assert k == k2 and torch.equal(v, v2), k
        p2 = MllamaProcessor.from_pretrained(str(out))
        assert p2.chat_template == MLLAMA_CHAT_TEMPLATE and p2.tokenizer.chat_template == MLLAMA_CHAT_TEMPLATE
        for c in MLLAMA_CASES:
            _, e1 = mllama_encode(processor, img_dir, [c])
            _, e2 = mllama_encode(p2, img_dir, [c])
            assert all(torch.equal(e1[k], e2[k]) for k in e1), c["name"]
        assert GenerationConfig.from_pretrained(str(out)).eos_token_id == config.text_config.eos_token_id

        tensors = {**image_tensors, **case_tensors}
        save_file(tensors, str(out / "reference.safetensors"), metadata={"format": "pt"})
        index = json.loads((out / "model.safetensors.index.json").read_text())
        reference = {
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "seed": seed,
            "eot_boost": boost,
            "max_new_tokens": MLLAMA_MAX_NEW_TOKENS,
            "date_string": MLLAMA_DATE_STRING,
            "notes": [
                "prompts: processor.apply_chat_template([{'role': 'user', 'content': content}], "
                "add_generation_prompt=True, date_string=date_string), then processor(images=..., text=prompt, "
                "add_special_tokens=False): the template already emits <|begin_of_text|>",
                "images are opened with PIL.Image.open(path) and no EXIF transpose",
                "logits: a plain forward pass (all positions); generate_logits: raw logits of every greedy "
                "step of generate() (KV cache); generate_scores: the same after the logits processors",
                "batch: left padding with <|finetune_right_pad_id|>; forward position_ids = "
                "cumsum(attention_mask) - 1 (1 where masked), as generate() uses",
            ],
            "token_ids": {t: tok.convert_tokens_to_ids(t) for t in MLLAMA_SPECIAL_TOKENS},
            "len_tokenizer": len(tok),
            "rope_llama3": rope,
            "text_only_layers": text_only,
            "images": image_meta,
            "cases": cases,
            "tensors": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                        for k, v in sorted(tensors.items())},
            "weight_shards": sorted(set(index["weight_map"].values())),
        }
        write_json(out / "reference.json", reference, compact=False)

    # ------------------------------------------------------------------ report
    print(f"\nwrote {out}  ({dir_size(out)} bytes)")
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"  {p.relative_to(out)}  {p.stat().st_size}")
    print(f"seed={seed} eot_boost={boost}  min greedy top1-top2 gap: {gap:.6g}")
    names = sorted(index["weight_map"])
    for prefix in ("vision_model.", "multi_modal_projector.", "language_model."):
        sel = [n for n in names if n.startswith(prefix)]
        print(f"{prefix}: {len(sel)} tensors, e.g. {sel[:6]}")
    print(f"shards: {reference['weight_shards']}")
    print(f"rope llama3: {rope['kind']}")
    print(f"text_only layers run: {text_only}")
    for stem, im in image_meta.items():
        print(f"  image {stem}: {im['pil_mode']} {im['pil_size_wh']} -> canvas {im['canvas_hw']} "
              f"resized {im['resized_hw']} tiles {im['tiles_hw']} id {im['aspect_ratio_id']}")
    for c in cases:
        print(f"  case {c['name']}: input_len {c['input_len']} image_pos {c['image_token_positions']} "
              f"ends_early {c['ends_early']} gap {c['min_greedy_gap']}")
        print(f"    generated {c['generated']}")
        print(f"    text {c['text']!r}")
    with safe_open(str(out / "reference.safetensors"), framework="pt") as f:
        ll = f.get_tensor("case.describe_landscape.logits_last")
        lp = f.get_tensor("case.describe_portrait.logits_last")
        print(f"logits_last std (landscape): {float(ll.std()):.3f}; max |landscape - portrait| = "
              f"{float((ll - lp).abs().max()):.3f}")
    print(f"sha256(reference.safetensors) = {sha256(out / 'reference.safetensors')}")
    print(f"sha256(reference.json) = {sha256(out / 'reference.json')}")


# --------------------------------------------------------------------------- #
# llava-next-video: tiny random LLaVA-NeXT-Video fixture
# --------------------------------------------------------------------------- #

LLAVA_TINY_DIR = REPO_ROOT / "worker" / "tests" / "fixtures" / "llava-next-video-tiny"
LLAVA_MAX_NEW_TOKENS = 16
LLAVA_MIN_GAP = 1e-3
LLAVA_MIN_DISTINCT = 4
LLAVA_SEEDS = [4460, 4461, 4462, 4463, 4464, 4465, 4466, 4467, 4468, 4469]
LLAVA_EOS_BOOSTS = [0.0, 1.0, 2.0, 3.0, 4.0, 6.0]
LLAVA_CROP = 40  # vision image_size = crop_size = shortest_edge (the real model: 336)
LLAVA_PATCH = 5  # vision patch_size (real: 14); 40 >= 5**2 keeps the pooler's image_size // patch**2 non-zero
LLAVA_PINPOINTS = [[40, 80], [80, 40], [80, 80], [120, 40], [40, 120]]  # the real list scaled by 40/336
LLAVA_SPM_VOCAB = 640

# chat_template.json of llava-hf/LLaVA-NeXT-Video-7B-hf as on the Hub (838 bytes since revision efd4fda, "Update
# chat_template.json to incorporate `generation` tag (#3)"): the llava-hf vicuna template with a video loop,
# "USER: <video>\n{text} ASSISTANT:". Revision 04a83e0 ("Fix system message", 626 bytes) is this template without
# the `generation` branch; its copy-pasted comment "Render all images first" before the video loop is kept, as on
# the Hub. Checks: json.dumps({"chat_template": LLAVA_CHAT_TEMPLATE}, indent=2, sort_keys=True) is exactly 838 bytes
# (the Hub file has no final newline; transformers 4.46.3's save_pretrained adds one, so the fixture's is 839), and
# transformers' own tests of the Hub processor expect "USER: <image>\nWhat is shown in this image? ASSISTANT:"
# (tests/models/llava_next_video/test_processor_llava_next_video.py).
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all images first #}{% for content in "
    "message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in "
    "message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}"
    "{% endgeneration %}{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}"
    "{% endif %}"
)

LLAVA_PREPROCESSOR_CONFIG = {
    "crop_size": {"height": LLAVA_CROP, "width": LLAVA_CROP},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_pad": True,
    "do_rescale": True,
    "do_resize": True,
    "image_grid_pinpoints": LLAVA_PINPOINTS,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "LlavaNextImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "processor_class": "LlavaNextVideoProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": LLAVA_CROP},
}

# media: stem -> ("image", (w, h)) or ("video", (w, h), frames)
LLAVA_MEDIA = {
    "wide": ("image", (130, 50)),  # anyres 1x3 grid, rows unpadded
    "tall": ("image", (47, 99)),  # anyres 3x1 grid, rows unpadded; padded to 119 rows, the last crop 39 high
    "clip": ("video", (61, 45), 4),  # 4 frames: shortest edge 45 -> 40 (54x40), centre crop 40x40
}
LLAVA_CASES = [
    {"name": "video", "media": "clip", "text": "Describe this video."},
    {"name": "image_wide", "media": "wide", "text": "What is in this image?"},
    {"name": "image_tall", "media": "tall", "text": "Describe the colours."},
]
LLAVA_BATCH = ["video", "image_tall"]  # one row per case name: a video and an image in one padded batch
# the worker's built-in task prompts (`prompt` follows an image, `video_prompt` a video), rendered by the fixture's
# processor into LLAVA_PROMPTS_FILE
LLAVA_TASKS_TOML = REPO_ROOT / "worker" / "src" / "tasks" / "builtin.toml"
LLAVA_PROMPTS_FILE = "pipeline_prompts.json"


def llava_make_media(d: Path) -> None:
    """Test images and video frames (PNG): gradients, moving shapes and blocky noise."""
    import numpy as np
    from PIL import Image, ImageDraw

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.Generator(np.random.PCG64(20241125))

    def frame(w, h, t):
        x = np.linspace(0.0, 1.0, w)[None, :]
        y = np.linspace(0.0, 1.0, h)[:, None]
        img = np.stack([40 + 180 * x + 20 * t + 0 * y, 60 + 150 * y + 25 * np.sin(5 * x + t),
                        190 - 110 * x * y + 15 * np.cos(7 * y - t)], axis=-1)
        noise = rng.integers(-20, 21, size=((h + 2) // 3, (w + 2) // 3, 3)).repeat(3, 0).repeat(3, 1)[:h, :w]
        img[h // 3: 2 * h // 3] += noise[h // 3: 2 * h // 3]
        im = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")
        dr = ImageDraw.Draw(im)
        cx = w * (0.2 + 0.15 * t)
        dr.ellipse([cx, h * 0.15, cx + w * 0.25, h * 0.5], fill=(250, 230, 30))
        dr.rectangle([w * 0.55, h * (0.5 + 0.08 * t), w * 0.9, h * 0.9], fill=(20, 30, 100))
        return im

    for stem, spec in LLAVA_MEDIA.items():
        if spec[0] == "image":
            frame(*spec[1], 0).save(d / f"{stem}.png")
        else:
            for t in range(spec[2]):
                frame(*spec[1], t).save(d / f"{stem}_{t}.png")


def llava_media_files(stem: str) -> list:
    spec = LLAVA_MEDIA[stem]
    return [f"{stem}.png"] if spec[0] == "image" else [f"{stem}_{t}.png" for t in range(spec[2])]


def llava_train_tokenizer(workdir: Path):
    """A Llama (sentencepiece BPE, byte fallback) tokenizer converted to tokenizer.json like vicuna's (legacy
    Prepend + Replace normalizer, Strip decoder: add_prefix_space=True reproduces it in 4.46), plus
    <video> and <image> as added special tokens (convert_llava_next_video_weights_to_hf.py)."""
    import sentencepiece as spm
    from transformers import AddedToken, LlamaTokenizerFast

    corpus = workdir / "llava_corpus.txt"
    lines = NLLB_CORPUS_EN + [c["text"] for c in LLAVA_CASES] * 3 + ["USER: ASSISTANT:"] * 3
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    prefix = workdir / "llava_spm"
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), model_type="bpe", vocab_size=LLAVA_SPM_VOCAB,
        hard_vocab_limit=False, character_coverage=1.0, byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, shuffle_input_sentence=False, input_sentence_size=0, split_digits=True,
        allow_whitespace_only_pieces=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        minloglevel=2,
    )
    # the model file records its training input's (temporary) path: keep only the file name, so that the
    # saved tokenizer.model is byte-identical from run to run
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(prefix.with_suffix(".model").read_bytes())
    proto.trainer_spec.input[:] = [corpus.name]
    proto.trainer_spec.model_prefix = prefix.name
    prefix.with_suffix(".model").write_bytes(proto.SerializeToString())
    tok = LlamaTokenizerFast(vocab_file=str(prefix.with_suffix(".model")), padding_side="left",
                             legacy=True, add_prefix_space=True, model_max_length=512, pad_token="<unk>")
    tok.add_tokens(AddedToken("<video>", special=True, normalized=False), special_tokens=True)
    tok.add_tokens(AddedToken("<image>", special=True, normalized=False), special_tokens=True)
    tok.chat_template = LLAVA_CHAT_TEMPLATE
    return tok


def llava_tiny_config(tok):
    from transformers import LlavaNextVideoConfig

    vocab = -(-len(tok) // 8) * 8 + 8  # padded beyond the tokenizer, as the real 32064 > 32002
    vision = {
        "model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 4,
        "num_attention_heads": 4, "image_size": LLAVA_CROP, "patch_size": LLAVA_PATCH, "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5, "projection_dim": 16, "vocab_size": 32000,
    }
    text = {
        "model_type": "llama", "vocab_size": vocab, "hidden_size": 64, "intermediate_size": 112,
        "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": {"factor": 2.0, "type": "linear"},
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "tie_word_embeddings": False,
        "architectures": ["LlamaForCausalLM"],
    }
    config = LlavaNextVideoConfig(
        vision_config=vision, text_config=text, image_grid_pinpoints=LLAVA_PINPOINTS,
        video_token_index=tok.convert_tokens_to_ids("<video>"), image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-3, vision_feature_select_strategy="default", spatial_pool_mode="average",
        spatial_pool_stride=2, use_image_newline_parameter=True, tie_word_embeddings=False,
        # below every prompt's placeholder count, so that transformers takes the expanded-tokens path
        image_seq_length=8, video_seq_length=8, architectures=["LlavaNextVideoForConditionalGeneration"],
        torch_dtype="float32",
    )
    for c in (config, config.vision_config, config.text_config):
        c._attn_implementation = "eager"
    return config


def llava_tiny_model(config, seed: int):
    """Random weights with spread-out logits: linear weights N(0, 1/fan_in), biases N(0, 0.1), norms N(1, 0.1),
    embeddings / image_newline N(0, 1), position embeddings N(0, 0.5), lm_head N(0, 0.4) with the rows of the
    256 byte-fallback pieces scaled by 0.25 (so that answers are mostly whole pieces, readable as text)."""
    import torch
    from transformers import LlavaNextVideoForConditionalGeneration

    torch.manual_seed(seed)
    model = LlavaNextVideoForConditionalGeneration(config)
    g = torch.Generator().manual_seed(seed)

    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=g, dtype=torch.float32) * std + mean

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "layrnorm" in name:
                p.copy_(normal(p.shape, 0.1, 1.0) if name.endswith("weight") else normal(p.shape, 0.1))
            elif name == "language_model.lm_head.weight":
                p.copy_(normal(p.shape, 0.4))
            elif name.endswith(("embed_tokens.weight", "class_embedding")) or name == "image_newline":
                p.copy_(normal(p.shape, 1.0))
            elif name.endswith("position_embedding.weight"):
                p.copy_(normal(p.shape, 0.5))
            elif name.endswith(".weight") and p.dim() >= 2:
                p.copy_(normal(p.shape, 1.0 / math.sqrt(p[0].numel())))
            elif name.endswith(".bias"):
                p.copy_(normal(p.shape, 0.1))
            else:
                raise RuntimeError(f"unexpected parameter {name} {tuple(p.shape)}")
        model.language_model.lm_head.weight[3:259] *= 0.25
    model.eval()
    return model


def llava_boost_eos(model, probe_hidden, boost: float) -> None:
    """Raise the </s> logit by `boost` on average over the probe positions (see mllama_boost_eot)."""
    import torch

    if boost == 0.0:
        return
    m = probe_hidden.reshape(-1, probe_hidden.shape[-1]).mean(0)
    with torch.no_grad():
        model.language_model.lm_head.weight[model.config.text_config.eos_token_id] += boost * m / m.dot(m)


def llava_processor(tok):
    from transformers import LlavaNextImageProcessor, LlavaNextVideoImageProcessor, LlavaNextVideoProcessor

    kw = {k: v for k, v in LLAVA_PREPROCESSOR_CONFIG.items() if k not in ("image_processor_type", "processor_class")}
    return LlavaNextVideoProcessor(
        video_processor=LlavaNextVideoImageProcessor(**kw), image_processor=LlavaNextImageProcessor(**kw),
        tokenizer=tok, chat_template=LLAVA_CHAT_TEMPLATE, patch_size=LLAVA_PATCH,
        vision_feature_select_strategy="default",
    )


def llava_load_media(media_dir: Path, stem: str):
    from PIL import Image

    frames = []
    for f in llava_media_files(stem):
        with Image.open(media_dir / f) as im:
            frames.append(im.convert("RGB"))
    return frames


def llava_encode(processor, media_dir: Path, names: list):
    """processor(text, images, videos) for the named cases, one row each (videos as (frames, h, w, 3) arrays)."""
    import numpy as np

    cases = [next(c for c in LLAVA_CASES if c["name"] == n) for n in names]
    texts, images, videos = [], [], []
    for c in cases:
        kind = LLAVA_MEDIA[c["media"]][0]
        content = [{"type": kind}, {"type": "text", "text": c["text"]}]
        texts.append(processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True))
        frames = llava_load_media(media_dir, c["media"])
        if kind == "image":
            images.append(frames[0])
        else:
            videos.append(np.stack([np.asarray(f) for f in frames]))
    enc = processor(text=texts, images=images or None, videos=videos or None, padding=True, return_tensors="pt")
    return texts, enc


def llava_run_all(model, processor, media_dir: Path, want_tensors: bool):
    import torch

    tok = processor.tokenizer
    eos = model.config.text_config.eos_token_id
    tensors, cases, probe = {}, [], []
    min_gap = float("inf")

    def one(name, names):
        nonlocal min_gap
        texts, enc = llava_encode(processor, media_dir, names)
        ids = enc["input_ids"]
        seq = ids.shape[1]
        pos = enc["attention_mask"].long().cumsum(-1) - 1
        pos.masked_fill_(enc["attention_mask"] == 0, 1)
        with torch.no_grad():
            fo = model(**enc, position_ids=pos, output_hidden_states=True)
            out = model.generate(**enc, max_new_tokens=LLAVA_MAX_NEW_TOKENS, do_sample=False, temperature=None,
                                 top_p=None, return_dict_in_generate=True, output_scores=True)
        probe.append(fo.hidden_states[-1][enc["attention_mask"].bool()])
        gap = mllama_gaps(out, seq, [eos])
        min_gap = min(min_gap, gap)
        # generate pads finished rows with pad_token_id: cut each row after its </s>
        new = [row[: row.index(eos) + 1] if eos in row else row for row in out.sequences[:, seq:].tolist()]
        case = {
            "name": name,
            "rows": names,
            "prompt": texts,
            "input_ids": ids.tolist(),
            "attention_mask": enc["attention_mask"].tolist(),
            "generated": new,
            "text": [tok.decode(n, skip_special_tokens=True) for n in new],
            "ends_early": [len(n) < LLAVA_MAX_NEW_TOKENS and n[-1] == eos for n in new],
            "min_greedy_gap": fmt_float(gap),
        }
        if want_tensors:
            p = f"case.{name}."
            t = {p + "logits_last": fo.logits[:, -1].float()}
            if names == ["video"]:
                t[p + "logits"] = fo.logits[0].float()
            if len(names) == 1:
                with torch.no_grad():
                    if "pixel_values_videos" in enc:
                        f = model.get_video_features(enc["pixel_values_videos"], model.config.vision_feature_layer,
                                                     model.config.vision_feature_select_strategy)
                        t[p + "media_features"] = torch.cat([x.flatten(0, 1) for x in f], 0).float()
                    else:
                        f = model.get_image_features(enc["pixel_values"], enc["image_sizes"],
                                                     model.config.vision_feature_layer,
                                                     model.config.vision_feature_select_strategy)
                        f, _ = model.pack_image_features(f, enc["image_sizes"], model.config.vision_feature_select_strategy,
                                                         image_newline=model.image_newline)
                        t[p + "media_features"] = f.float()
                for k in ("pixel_values", "pixel_values_videos"):
                    if k in enc:
                        t[p + k] = enc[k][0].float()
                if "image_sizes" in enc:
                    case["image_size"] = enc["image_sizes"][0].tolist()
            tensors.update({k: v.detach().clone().contiguous() for k, v in t.items()})
            case["tensors"] = sorted(t)
        cases.append(case)
        return case

    singles = {c["name"]: one(c["name"], [c["name"]]) for c in LLAVA_CASES}
    b = one("batch", LLAVA_BATCH)
    b["matches_single"] = [b["generated"][i] == singles[n]["generated"][0] for i, n in enumerate(LLAVA_BATCH)]
    return cases, tensors, min_gap, torch.cat(probe, 0)


def llava_pipeline_prompts(processor) -> dict:
    """Every built-in task prompt as the pipeline asks it (one user message: the image or video, then the task's
    text) through processor.apply_chat_template, and the rendered prompt's ids (placeholders not expanded; the
    tokenizer adds <s>)."""
    import tomllib

    import transformers

    tasks = tomllib.loads(LLAVA_TASKS_TOML.read_text(encoding="utf-8"))["task"]
    prompts = []
    for task in tasks:
        for media, key in (("image", "prompt"), ("video", "video_prompt")):
            text = task[key]
            messages = [{"role": "user", "content": [{"type": media}, {"type": "text", "text": text}]}]
            rendered = processor.apply_chat_template(messages, add_generation_prompt=True)
            ids = processor.tokenizer(rendered).input_ids
            prompts.append({"task": task["name"], "media": media, "text": text, "rendered": rendered, "ids": ids})
    return {
        "transformers_version": transformers.__version__,
        "notes": [
            f"{LLAVA_TASKS_TOML.relative_to(REPO_ROOT)}: each task's `prompt` (image) and `video_prompt` (video)",
            "rendered: processor.apply_chat_template([{'role': 'user', 'content': [{'type': media}, {'type': "
            "'text', 'text': text}]}], add_generation_prompt=True) with the fixture's chat_template.json",
            "ids: processor.tokenizer(rendered).input_ids (placeholders not expanded)",
        ],
        "prompts": prompts,
    }


def cmd_llava_next_video_prompts(args) -> None:
    """Only the pipeline prompts of an existing llava-next-video fixture (needs transformers, not torch)."""
    from transformers import LlavaNextVideoProcessor

    out = Path(args.out).resolve()
    processor = LlavaNextVideoProcessor.from_pretrained(str(out))
    if processor.chat_template != LLAVA_CHAT_TEMPLATE:
        raise SystemExit(f"{out}/chat_template.json is not LLAVA_CHAT_TEMPLATE: regenerate with llava-next-video")
    write_json(out / LLAVA_PROMPTS_FILE, llava_pipeline_prompts(processor))
    print(f"wrote {out / LLAVA_PROMPTS_FILE}  sha256 {sha256(out / LLAVA_PROMPTS_FILE)}")


def llava_acceptable(cases, gap, vocab_tok) -> tuple:
    rows = [g for c in cases for g in c["generated"]]
    early = [e for c in cases for e in c["ends_early"]]
    distinct = min(len(set(r)) for r in rows)
    in_vocab = all(t < vocab_tok for r in rows for t in r)
    batch_ok = all(all(c.get("matches_single", [True])) for c in cases)
    ok = gap > LLAVA_MIN_GAP and batch_ok and 0 < sum(early) < len(early) and distinct >= LLAVA_MIN_DISTINCT and in_vocab
    return ok, f"min_gap={gap:.4g} ends_early={early} batch==single={batch_ok} min_distinct={distinct} in_vocab={in_vocab}"


def cmd_llava_next_video(args) -> None:
    torch = _import_ml()
    import transformers
    from safetensors.torch import save_file
    from transformers import LlavaNextVideoForConditionalGeneration, LlavaNextVideoProcessor

    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory(prefix="llava-tiny-") as tmp:
        tmp = Path(tmp)
        media_dir = tmp / "media"
        llava_make_media(media_dir)
        tok = llava_train_tokenizer(tmp)
        processor = llava_processor(tok)
        config = llava_tiny_config(tok)
        print(f"tokenizer: len={len(tok)} vocab_size={config.text_config.vocab_size} "
              f"image={config.image_token_index} video={config.video_token_index}")

        chosen = None
        for seed in LLAVA_SEEDS:
            base = llava_tiny_model(config, seed)
            _, _, _, probe = llava_run_all(base, processor, media_dir, want_tensors=False)
            for boost in LLAVA_EOS_BOOSTS:
                model = llava_tiny_model(config, seed)
                llava_boost_eos(model, probe, boost)
                cases, _, gap, _ = llava_run_all(model, processor, media_dir, want_tensors=False)
                ok, why = llava_acceptable(cases, gap, len(tok))
                print(f"seed={seed} eos_boost={boost}: {why}")
                if not ok:
                    continue
                # the single-row answers must not depend on float32 rounding (the padded batch is left out: its
                # fully masked padding rows turn NaN in float64, see mllama_sequences)
                torch.set_default_dtype(torch.float64)
                try:
                    cases64, _, _, _ = llava_run_all(model.double(), processor, media_dir, want_tensors=False)
                finally:
                    torch.set_default_dtype(torch.float32)
                model.float()
                singles = [c["generated"] for c in cases if c["name"] != "batch"]
                same64 = singles == [c["generated"] for c in cases64 if c["name"] != "batch"]
                print(f"  float64 agreement: {same64}")
                if same64:
                    chosen = (seed, boost)
                    break
            if chosen:
                break
        if not chosen:
            raise SystemExit("no (seed, eos_boost) candidate passed the checks")
        seed, boost = chosen
        model = llava_tiny_model(config, seed)
        llava_boost_eos(model, probe, boost)
        cases, tensors, gap, _ = llava_run_all(model, processor, media_dir, want_tensors=True)

        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        model.save_pretrained(str(out), safe_serialization=True, max_shard_size="300KB")
        cfg = json.loads((out / "config.json").read_text())
        for sub in ("text_config", "vision_config"):
            cfg[sub].pop("_attn_implementation_autoset", None)
        (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        write_json(out / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0})
        processor.save_pretrained(str(out))  # tokenizer files, preprocessor_config.json, chat_template.json, ...
        shutil.copytree(media_dir, out / "media")

        # the saved folder loads back to the same model and processor outputs
        m = LlavaNextVideoForConditionalGeneration.from_pretrained(str(out), attn_implementation="eager").eval()
        for (k, v), (k2, v2) in zip(sorted(model.state_dict().items()), sorted(m.state_dict().items())):
            assert k == k2 and torch.equal(v, v2), k
        p2 = LlavaNextVideoProcessor.from_pretrained(str(out))
        for c in cases:
            _, e1 = llava_encode(processor, media_dir, c["rows"])
            _, e2 = llava_encode(p2, media_dir, c["rows"])
            assert all(torch.equal(e1[k], e2[k]) for k in e1), c["name"]

        save_file(tensors, str(out / "reference.safetensors"), metadata={"format": "pt"})
        index = json.loads((out / "model.safetensors.index.json").read_text())
        reference = {
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "seed": seed,
            "eos_boost": boost,
            "max_new_tokens": LLAVA_MAX_NEW_TOKENS,
            "notes": [
                "prompts: processor.apply_chat_template([{'role': 'user', 'content': [{'type': 'video'|'image'}, "
                "{'type': 'text', 'text': ...}]}], add_generation_prompt=True), then processor(text, images, videos, "
                "padding=True): the tokenizer adds <s>",
                "media are PNG files opened with PIL and converted to RGB; a video is its frames stacked",
                "logits: a forward pass with position_ids = cumsum(attention_mask) - 1 (1 where masked)",
                "generated: greedy ids after the prompt, cut after </s>",
            ],
            "media": {k: {"kind": v[0], "size_wh": list(v[1]), "files": llava_media_files(k)}
                      for k, v in LLAVA_MEDIA.items()},
            "cases": cases,
            "tensors": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                        for k, v in sorted(tensors.items())},
            "weight_shards": sorted(set(index["weight_map"].values())),
        }
        write_json(out / "reference.json", reference)
        write_json(out / LLAVA_PROMPTS_FILE, llava_pipeline_prompts(p2))

    print(f"\nwrote {out}  ({dir_size(out)} bytes)")
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"  {p.relative_to(out)}  {p.stat().st_size}")
    print(f"seed={seed} eos_boost={boost}  min greedy top1-top2 gap: {gap:.6g}")
    for c in cases:
        print(f"  case {c['name']}: input_len {len(c['input_ids'][0])} ends_early {c['ends_early']} "
              f"gap {c['min_greedy_gap']}")
        print(f"    generated {c['generated']}")
        print(f"    text {c['text']!r}")
    print(f"sha256(reference.safetensors) = {sha256(out / 'reference.safetensors')}")


# --------------------------------------------------------------------------- #

# --------------------------------------------------------------------------- #
# jpeg: decoder parity fixtures
# --------------------------------------------------------------------------- #

JPEG_DIR = REPO_ROOT / "worker/tests/fixtures/jpeg"
JPEG_RAW_LIMIT = 16 * 1024  # decoded RGB up to this size is committed as raw bytes, larger ones as sha256 only


def jpeg_photo(w: int, h: int, seed: int, noise: int):
    """Photo-like RGB: gradients, soft blobs, sharp edges and per-pixel noise (all decoder paths matter)."""
    import numpy as np

    rng = np.random.Generator(np.random.PCG64(seed))
    x = np.linspace(0.0, 1.0, w)[None, :]
    y = np.linspace(0.0, 1.0, h)[:, None]
    r = 20 + 210 * x + 15 * np.sin(17 * y)
    g = 40 + 170 * y + 40 * np.sin(7.0 * x + 3 * y)
    b = 210 - 150 * x * y + 30 * np.cos(11.0 * y)
    img = np.stack([r, g, b], axis=-1)
    blob = np.exp(-(((x - 0.3) / 0.15) ** 2 + ((y - 0.6) / 0.2) ** 2))
    img += blob[..., None] * np.array([120.0, -80.0, -60.0])
    img[(x > 0.6) & (y > 0.2) & (y < 0.5)] = (250, 240, 30)  # a saturated block with hard edges
    img += rng.normal(0, noise, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def cmd_jpeg(args) -> None:
    import subprocess

    import numpy as np
    import PIL
    from PIL import Image, features

    if PIL.__version__ != "11.0.0":
        raise SystemExit(f"Pillow {PIL.__version__}: the reference is Pillow 11.0.0 (libjpeg-turbo 3.0.4)")
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    def pillow(name, im, **kw):
        im.save(out / f"{name}.jpg", **kw)

    def cjpeg(name, rgb, *flags):
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "in.ppm"
            Image.fromarray(rgb, "RGB").save(src)
            subprocess.run(["cjpeg", *flags, "-outfile", str(out / f"{name}.jpg"), str(src)], check=True)

    rgb = lambda w, h, seed, noise=12: Image.fromarray(jpeg_photo(w, h, seed, noise), "RGB")  # noqa: E731
    # (name, how it was made): odd sizes everywhere so that partial MCUs and edge upsampling are exercised.
    cases = []

    def case(name, how):
        cases.append((name, how))

    pillow("q75_444", rgb(33, 17, 1), quality=75, subsampling="4:4:4")
    case("q75_444", "Pillow, quality 75, 4:4:4, 33x17")
    pillow("q75_422", rgb(37, 29, 2), quality=75, subsampling="4:2:2")
    case("q75_422", "Pillow, quality 75, 4:2:2, 37x29")
    pillow("q75_420", rgb(45, 31, 3), quality=75, subsampling="4:2:0")
    case("q75_420", "Pillow, quality 75, 4:2:0, 45x31")
    pillow("q95_420", rgb(70, 41, 4), quality=95, subsampling="4:2:0")
    case("q95_420", "Pillow, quality 95, 4:2:0, 70x41")
    pillow("q30_420", rgb(64, 48, 5), quality=30, subsampling="4:2:0")
    case("q30_420", "Pillow, quality 30, 4:2:0, 64x48 (whole MCUs)")
    pillow("q95_444_tiny", rgb(3, 5, 6), quality=95, subsampling="4:4:4")
    case("q95_444_tiny", "Pillow, quality 95, 4:4:4, 3x5")
    pillow("q75_420_1px", rgb(1, 9, 7), quality=75, subsampling="4:2:0")
    case("q75_420_1px", "Pillow, quality 75, 4:2:0, 1x9")
    pillow("progressive_420", rgb(41, 37, 8), quality=80, subsampling="4:2:0", progressive=True)
    case("progressive_420", "Pillow, progressive, quality 80, 4:2:0, 41x37 (block smoothing)")
    pillow("progressive_444", rgb(29, 35, 9), quality=60, subsampling="4:4:4", progressive=True)
    case("progressive_444", "Pillow, progressive, quality 60, 4:4:4, 29x35")
    pillow("restart_420", rgb(53, 27, 10), quality=85, subsampling="4:2:0", restart_marker_blocks=2)
    case("restart_420", "Pillow, restart marker every 2 MCUs, quality 85, 4:2:0, 53x27")
    pillow("optimized_422", rgb(38, 22, 11), quality=70, subsampling="4:2:2", optimize=True)
    case("optimized_422", "Pillow, optimized Huffman tables, quality 70, 4:2:2, 38x22")
    pillow("gray", rgb(31, 23, 12).convert("L"), quality=75)
    case("gray", "Pillow, mode L, quality 75, 31x23")
    cmyk = np.concatenate([jpeg_photo(27, 19, 13, 10), jpeg_photo(27, 19, 14, 10)[..., :1]], axis=-1)
    pillow("cmyk_adobe", Image.fromarray(cmyk, "CMYK"), quality=75)
    case("cmyk_adobe", "Pillow, mode CMYK (inverted, Adobe marker), quality 75, 27x19")
    cjpeg("cjpeg_440", jpeg_photo(35, 27, 15, 12), "-quality", "75", "-sample", "1x2")
    case("cjpeg_440", "cjpeg -quality 75 -sample 1x2 (4:4:0), 35x27")
    cjpeg("cjpeg_411", jpeg_photo(43, 21, 16, 12), "-quality", "75", "-sample", "4x1")
    case("cjpeg_411", "cjpeg -quality 75 -sample 4x1 (4:1:1), 43x21")
    cjpeg("cjpeg_arith", jpeg_photo(39, 25, 17, 12), "-quality", "75", "-arithmetic")
    case("cjpeg_arith", "cjpeg -quality 75 -arithmetic (4:2:0), 39x25")
    cjpeg("cjpeg_rgb", jpeg_photo(25, 19, 18, 12), "-quality", "75", "-rgb")
    case("cjpeg_rgb", "cjpeg -quality 75 -rgb (RGB components, no YCbCr transform), 25x19")
    pillow("photo_420", rgb(517, 389, 19, noise=4), quality=85, subsampling="4:2:0")
    case("photo_420", "Pillow, quality 85, 4:2:0, 517x389 photo-like")
    pillow("photo_422_progressive", rgb(301, 203, 20, noise=4), quality=90, subsampling="4:2:2", progressive=True)
    case("photo_422_progressive", "Pillow, progressive, quality 90, 4:2:2, 301x203 photo-like")

    reference = {"pillow": PIL.__version__, "libjpeg_turbo": features.version("jpg"), "images": {}}
    for name, how in cases:
        with Image.open(out / f"{name}.jpg") as im:
            mode = im.mode
            # What transformers' convert_to_rgb sees for every mode a JPEG opens as (no alpha).
            data = np.asarray(im.convert("RGB"))
        raw = data.tobytes()
        entry = {"how": how, "mode": mode, "width": int(data.shape[1]), "height": int(data.shape[0]),
                 "sha256": hashlib.sha256(raw).hexdigest(), "rgb": None}
        if len(raw) <= JPEG_RAW_LIMIT:
            (out / f"{name}.rgb").write_bytes(raw)
            entry["rgb"] = f"{name}.rgb"
        reference["images"][name] = entry
    write_json(out / "reference.json", reference)
    print(f"jpeg: {len(cases)} files, {dir_size(out) / 1024:.0f} KiB in {out}")


# --------------------------------------------------------------------------- #
# prequant: pre-quantized checkpoints (bitsandbytes NF4/FP4, compressed-tensors FP8)
# --------------------------------------------------------------------------- #

PREQUANT_DIR = REPO_ROOT / "worker" / "tests" / "fixtures" / "prequant"
PREQUANT_BLOCKSIZE = 64  # bitsandbytes' default 4-bit block (Linear4bit, BitsAndBytesConfig)
PREQUANT_NESTED_BLOCKSIZE = 256  # quantize_4bit(compress_statistics=True) quantizes absmax in blocks of 256
PREQUANT_SEED = 6060
# Reference cases run on the dequantized models (prompts and images of the mllama-tiny fixture).
PREQUANT_CASES = ("describe_landscape", "text_only")
# Modules kept in bf16, as the real repos' configs list them (SeanScripts/Llama-3.2-11B-Vision-Instruct-nf4:
# BitsAndBytesConfig(llm_int8_skip_modules=...); neuralmagic/Llama-3.2-11B-Vision-Instruct-FP8-dynamic:
# the llm-compressor recipe's `ignore`). The nf4 fixture quantizes the vision tower, the fp8 one keeps it dense,
# so both paths are covered.
PREQUANT_BNB_SKIP = ["lm_head", "multi_modal_projector"]
PREQUANT_FP8_IGNORE = ["re:.*lm_head", "re:multi_modal_projector.*", "re:vision_model.*"]
# Tokenizer / processor files copied from mllama-tiny so that each quantized folder loads on its own.
PREQUANT_COPIED_FILES = (
    "chat_template.json",
    "generation_config.json",
    "preprocessor_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
)

# Tensor-level cases, (name, shape, quant_type, double_quant, dtype): element counts that are not multiples of
# the block (partial last block), odd (the last byte's low nibble is padding), more than 256 blocks (two nested
# absmax blocks, the last one partial), and a bf16 original.
PREQUANT_BNB_CASES = [
    ("nf4_odd.weight", (5, 37), "nf4", False, "float32"),
    ("nf4_bf16.weight", (3, 100), "nf4", False, "bfloat16"),
    ("nf4_nested.weight", (130, 130), "nf4", True, "float32"),
    ("nf4_nested_odd.weight", (33, 71), "nf4", True, "bfloat16"),
    ("fp4.weight", (6, 40), "fp4", False, "float32"),
    ("fp4_nested_odd.weight", (9, 29), "fp4", True, "float16"),
]
# (name, shape, strategy, scale dtype, with zero point)
PREQUANT_FP8_CASES = [
    ("channel.weight", (7, 19), "channel", "float32", False),
    ("channel_bf16.weight", (9, 24), "channel", "bfloat16", False),
    ("tensor.weight", (5, 8), "tensor", "float32", False),
    ("group.weight", (4, 32), "group", "bfloat16", False),
    ("zero_point.weight", (3, 16), "channel", "float32", True),
]


def prequant_torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def prequant_quantize_4bit_kernel(A, blocksize: int, quant_type: str):
    """bitsandbytes' blockwise 4-bit quantization, as its CPU backend computes it
    (bitsandbytes/backends/default/ops.py `quantize_4bit`), for any element count.

    Blocks run over the flattened tensor (the last one partial); absmax is f32 per block; each value is scaled by
    1 / absmax, clamped to [-1, 1] and mapped to the nearest entry of the 4-bit table; two codes per byte, the
    first in the HIGH nibble. That CPU kernel fails on an odd element count; the CUDA kernel (kQuantizeBlockwise)
    loads 0.0 for the missing last element, so the padding nibble is the code of 0.0, as here.
    Returns (packed uint8 [(n + 1) // 2, 1], absmax f32 [blocks])."""
    import torch
    from bitsandbytes.backends.utils import CODE as CPU_CODE

    n = A.numel()
    flat = A.reshape(n)
    blocks = -(-n // blocksize)
    absmax = torch.zeros((blocks,), dtype=torch.float32)
    scaled = []
    for b in range(blocks):
        chunk = flat[b * blocksize:(b + 1) * blocksize]
        absmax[b] = chunk.abs().max()
        # as that kernel: full blocks are scaled in f32; the partial one by a 0-dim f32 tensor, which keeps a
        # bf16/f16 input's dtype (torch's promotion rules), so it is rounded to it before the table lookup
        scale = 1 / (absmax[b : b + 1] if chunk.numel() == blocksize else absmax[b])
        scaled.append(torch.clamp(chunk * scale, -1, 1))
    scaled = torch.cat(scaled)
    if n % 2:
        scaled = torch.cat([scaled, torch.zeros(1, dtype=scaled.dtype)])
    code = CPU_CODE[quant_type].to(scaled.dtype)
    q = torch.argmin(torch.abs(scaled.view(-1, 1) - code), dim=-1, keepdim=True).to(torch.uint8)
    return q[::2] << 4 | q[1::2], absmax


def prequant_quantize_4bit(A, quant_type: str, double_quant: bool):
    """(packed weight, QuantState) exactly as `bitsandbytes.functional.quantize_4bit(A, blocksize=64,
    compress_statistics=double_quant, quant_type=quant_type)` builds them, with the kernel above so that odd
    element counts work on the CPU too. Where bitsandbytes' own CPU kernel runs (even counts), its output is
    checked to be identical."""
    import torch
    import bitsandbytes.functional as bnbf

    packed, absmax = prequant_quantize_4bit_kernel(A, PREQUANT_BLOCKSIZE, quant_type)
    if A.numel() % 2 == 0:
        ref_packed, ref_state = bnbf.quantize_4bit(A, blocksize=PREQUANT_BLOCKSIZE, quant_type=quant_type)
        assert torch.equal(packed, ref_packed) and torch.equal(absmax, ref_state.absmax), "kernel != bitsandbytes"
    code = bnbf.get_4bit_type(quant_type, device="cpu")
    if double_quant:
        # quantize_4bit(compress_statistics=True): absmax - mean(absmax) in 8-bit dynamic blocks of 256
        offset = absmax.mean()
        qabsmax, state2 = bnbf.quantize_blockwise(absmax - offset, blocksize=PREQUANT_NESTED_BLOCKSIZE)
        state = bnbf.QuantState(absmax=qabsmax, shape=A.shape, dtype=A.dtype, blocksize=PREQUANT_BLOCKSIZE,
                                code=code, quant_type=quant_type, offset=offset, state2=state2)
        if A.numel() % 2 == 0:
            _, ref_state = bnbf.quantize_4bit(A, blocksize=PREQUANT_BLOCKSIZE, quant_type=quant_type,
                                              compress_statistics=True)
            assert torch.equal(qabsmax, ref_state.absmax) and torch.equal(state2.absmax, ref_state.state2.absmax)
    else:
        state = bnbf.QuantState(absmax=absmax, shape=A.shape, dtype=A.dtype, blocksize=PREQUANT_BLOCKSIZE,
                                code=code, quant_type=quant_type)
    return packed, state


def prequant_bnb_tensors(prefix: str, packed, state) -> dict:
    """The safetensors entries of one quantized weight, named as transformers saves a bitsandbytes Linear4bit
    (`Linear4bit._save_to_state_dict`: `X.weight` + `X.weight.<k>` for k in `QuantState.as_dict(packed=True)`)."""
    out = {prefix: packed}
    for k, v in state.as_dict(packed=True).items():
        out[f"{prefix}.{k}"] = v
    return out


def prequant_dequantize_4bit_numpy(packed, absmax_f32, quant_type: str, n: int):
    """The documented dequantization (CUDA kDequantizeBlockwise / dDequantizeNF4, dDequantizeFP4Tree):
    value[i] = table[code_i] * absmax[i // blocksize] in f32, code_i = high nibble of byte i // 2 for even i,
    low nibble for odd i."""
    import numpy as np
    import bitsandbytes.functional as bnbf

    table = bnbf.get_4bit_type(quant_type, device="cpu").numpy().astype(np.float32)
    data = packed.reshape(-1).numpy()
    codes = np.empty(data.size * 2, dtype=np.uint8)
    codes[0::2] = data >> 4
    codes[1::2] = data & 0xF
    codes = codes[:n]
    scale = absmax_f32.numpy().astype(np.float32)[np.arange(n) // PREQUANT_BLOCKSIZE]
    return (table[codes] * scale).astype(np.float32)


def prequant_absmax_f32(state):
    """The f32 absmax of a QuantState, through bitsandbytes' dequantize_blockwise + offset when nested."""
    import bitsandbytes.functional as bnbf

    if not state.nested:
        return state.absmax
    absmax = bnbf.dequantize_blockwise(state.absmax, state.state2)
    absmax += state.offset
    return absmax.float()


def prequant_dequantize_4bit(packed, state):
    """f32 dequantized weight by the documented formula (numpy), checked against
    bitsandbytes.functional.dequantize_4bit where its CPU kernel computes the same thing: NF4 with an even element
    count, the state's dtype set to f32. (For a bf16/f16 state that kernel rounds the table entries to the dtype
    before multiplying, where the CUDA kernel multiplies in f32 and rounds once; its FP4 table is rounded to four
    decimals, 0.6667 for 2/3, where get_4bit_type and the CUDA kernel's dDequantizeFP4Tree use f32(2/3).)"""
    import copy

    import numpy as np
    import torch
    import bitsandbytes.functional as bnbf

    n = math.prod(state.shape)
    absmax = prequant_absmax_f32(state)
    expected = prequant_dequantize_4bit_numpy(packed, absmax, state.quant_type, n).reshape(tuple(state.shape))
    if n % 2 == 0 and state.quant_type == "nf4":
        f32_state = copy.copy(state)
        f32_state.dtype = torch.float32
        got = bnbf.dequantize_4bit(packed, f32_state).numpy()
        assert np.array_equal(got, expected), "bitsandbytes dequantize_4bit != documented formula"
    return torch.from_numpy(expected)


def prequant_fp8_quantize(w, strategy: str, with_zero_point: bool):
    """compressed-tensors' FP8 weight quantization (`calculate_qparams` + `quantize`) for one weight: returns
    {"weight": float8_e4m3fn, "weight_scale": scale[, "weight_zero_point"]} as FloatQuantizationCompressor saves
    them (zero points are dropped when all zero)."""
    import torch
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import quantize
    from compressed_tensors.quantization.utils import calculate_range

    group_size = 8 if strategy == "group" else None
    args = QuantizationArgs(num_bits=8, type="float", strategy=strategy, symmetric=True, group_size=group_size,
                            dynamic=False)
    if strategy == "tensor":
        mins, maxs = w.min().reshape(1), w.max().reshape(1)
    elif strategy == "channel":
        mins, maxs = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    else:
        grouped = w.reshape(w.shape[0], -1, group_size)
        mins, maxs = grouped.amin(dim=2), grouped.amax(dim=2)
    # calculate_qparams for a symmetric float8 scheme (its last step, casting the all-zero points to fp8, fails
    # on the CPU in torch 2.5.1; all-zero points are not saved anyway):
    mins, maxs = torch.min(mins, torch.zeros_like(mins)), torch.max(maxs, torch.zeros_like(maxs))
    q_min, q_max = calculate_range(args, "cpu")
    scale = torch.max(mins.abs(), maxs.abs()) / (float(q_max - q_min) / 2)
    scale = torch.clamp(scale, min=torch.finfo(torch.float32).eps)
    zero_point = None
    if with_zero_point:
        # An asymmetric float scheme: a non-zero point, in fp8 as compressed-tensors stores it (its own
        # asymmetric calculate_qparams cannot cast to fp8 on the CPU in torch 2.5.1).
        zero_point = torch.linspace(-2, 3, scale.numel()).reshape(scale.shape).to(torch.float8_e4m3fn)
    q = quantize(x=w, scale=scale, zero_point=zero_point, args=args, dtype=torch.float8_e4m3fn)
    out = {"weight": q, "weight_scale": scale}
    if with_zero_point:
        out["weight_zero_point"] = zero_point
    return out


def prequant_fp8_dequantize(parts: dict):
    """(f32 weight, weight as compressed-tensors decompresses it): the f32 value is (fp8 - zero point) * scale
    computed in f32 (exact for a bf16 scale and no zero point); `FloatQuantizationCompressor.decompress_weight`
    computes in the scale's dtype (`_dequantize`: x_q.to(scale.dtype) * scale)."""
    import torch
    from compressed_tensors.compressors.quantized_compressors.naive_quantized import FloatQuantizationCompressor

    q, scale = parts["weight"], parts["weight_scale"]
    zp = parts.get("weight_zero_point")
    rows, cols = q.shape
    s = scale.float()
    if s.numel() == 1:
        s = s.reshape(1, 1)
    elif s.shape[1] not in (1, cols):
        s = s.repeat_interleave(cols // s.shape[1], dim=1)
    x = q.float()
    if zp is not None:
        z = zp.float()
        z = z.reshape(1, 1) if z.numel() == 1 else z.repeat_interleave(cols // z.shape[1], dim=1)
        x = x - z
    exact = x * s
    library = FloatQuantizationCompressor.decompress_weight(None, dict(parts))
    if scale.dtype == torch.float32:
        assert torch.equal(library, exact), "compressed-tensors dequantize != (q - zp) * scale"
    elif zp is None:
        assert torch.equal(library, exact.to(scale.dtype)), "bf16 dequantize != round(f32 product)"
    return exact, library


def prequant_tensor_fixtures(out: Path) -> dict:
    """tensors/: bnb.safetensors and fp8.safetensors in the checkpoint layouts, expected.safetensors with the
    reference dequantization, and their description for the tests."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(PREQUANT_SEED)
    bnb, fp8, expected, cases = {}, {}, {}, []
    for name, shape, quant_type, double_quant, dtype in PREQUANT_BNB_CASES:
        w = (torch.randn(shape, generator=g) * 0.5).to(prequant_torch_dtype(dtype))
        packed, state = prequant_quantize_4bit(w, quant_type, double_quant)
        bnb.update(prequant_bnb_tensors(name, packed, state))
        expected[f"bnb.{name}"] = prequant_dequantize_4bit(packed, state).contiguous()
        cases.append({"file": "bnb.safetensors", "name": name, "shape": list(shape), "quant_type": quant_type,
                      "double_quant": double_quant, "dtype": dtype, "expected": f"bnb.{name}",
                      "companions": sorted(k for k in prequant_bnb_tensors(name, packed, state) if k != name)})
    # a module in llm_int8_skip_modules: plain bf16 weight and bias
    bnb["skipped.weight"] = (torch.randn((4, 6), generator=g)).to(torch.bfloat16)
    bnb["skipped.bias"] = (torch.randn((4,), generator=g)).to(torch.bfloat16)
    expected["bnb.skipped.weight"] = bnb["skipped.weight"].float()

    for name, shape, strategy, scale_dtype, with_zp in PREQUANT_FP8_CASES:
        w = (torch.randn(shape, generator=g) * 0.3).to(prequant_torch_dtype(scale_dtype))
        parts = prequant_fp8_quantize(w, strategy, with_zp)
        prefix = name[: -len(".weight")]
        for k, v in parts.items():
            fp8[f"{prefix}.{k}"] = v.contiguous()
        exact, library = prequant_fp8_dequantize(parts)
        expected[f"fp8.{name}"] = exact.contiguous()
        case = {"file": "fp8.safetensors", "name": name, "shape": list(shape), "strategy": strategy,
                "scale_dtype": scale_dtype, "zero_point": with_zp, "expected": f"fp8.{name}"}
        if scale_dtype != "float32" and not with_zp:
            expected[f"fp8.{name}.compressed_tensors"] = library.contiguous()
            case["expected_in_scale_dtype"] = f"fp8.{name}.compressed_tensors"
        cases.append(case)
    # a module in the ignore list: plain bf16
    fp8["ignored.weight"] = torch.randn((3, 5), generator=g).to(torch.bfloat16)
    expected["fp8.ignored.weight"] = fp8["ignored.weight"].float()

    d = out / "tensors"
    d.mkdir(parents=True)
    save_file(bnb, str(d / "bnb.safetensors"), metadata={"format": "pt"})
    save_file(fp8, str(d / "fp8.safetensors"), metadata={"format": "pt"})
    save_file(expected, str(d / "expected.safetensors"), metadata={"format": "pt"})
    return {
        "cases": cases,
        "passthrough": [{"file": "bnb.safetensors", "name": "skipped.weight", "expected": "bnb.skipped.weight"},
                        {"file": "fp8.safetensors", "name": "ignored.weight", "expected": "fp8.ignored.weight"}],
        "quantization_config": {"bnb.safetensors": prequant_bnb_config(double_quant=True),
                                "fp8.safetensors": prequant_fp8_config()},
    }


def prequant_bnb_config(double_quant: bool) -> dict:
    """config.json's quantization_config as transformers 4.46 writes it for a bitsandbytes 4-bit model."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=PREQUANT_BNB_SKIP,
    ).to_dict()


def prequant_fp8_config() -> dict:
    """config.json's quantization_config of an llm-compressor FP8_DYNAMIC model (compressed-tensors): per-channel
    float8 weights, per-token dynamic float8 activations."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme

    scheme = QuantizationScheme(
        targets=["Linear"],
        weights=QuantizationArgs(num_bits=8, type="float", strategy="channel", symmetric=True, dynamic=False,
                                 observer="minmax"),
        input_activations=QuantizationArgs(num_bits=8, type="float", strategy="token", symmetric=True,
                                           dynamic=True, observer=None),
    )
    config = QuantizationConfig(config_groups={"group_0": scheme}, ignore=PREQUANT_FP8_IGNORE,
                                format="float-quantized", quantization_status="compressed")
    return config.model_dump()


def prequant_linear_names(model, excluded) -> list:
    """Names of the nn.Linear modules that a quantizer converts: all but those `excluded(name)` says."""
    import torch

    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not excluded(n)]


def prequant_bnb_excluded(name: str) -> bool:
    # transformers' replace_with_bnb_linear: a module is skipped when a skip entry is a dotted part of its name
    return any((key + "." in name + ".") or key == name for key in PREQUANT_BNB_SKIP)


def prequant_fp8_excluded(name: str) -> bool:
    import re

    return any(re.match(p[3:], name) if p.startswith("re:") else p == name for p in PREQUANT_FP8_IGNORE)


def prequant_quantize_model(state: dict, kind: str, linear: list):
    """(checkpoint tensors, the f32 weights they load as): bf16 originals (as the real repos hold), quantized
    linears in the layout of `kind`."""
    import torch

    saved, loaded = {}, {}
    for name, value in state.items():
        original = value.to(torch.bfloat16)
        module = name[: -len(".weight")] if name.endswith(".weight") else None
        if module in linear:
            if kind == "nf4":
                packed, qs = prequant_quantize_4bit(original, "nf4", double_quant=False)
                saved.update(prequant_bnb_tensors(name, packed, qs))
                loaded[name] = prequant_dequantize_4bit(packed, qs)
            else:
                parts = prequant_fp8_quantize(original, "channel", with_zero_point=False)
                saved[name] = parts["weight"].contiguous()
                saved[module + ".weight_scale"] = parts["weight_scale"].contiguous()
                loaded[name], _ = prequant_fp8_dequantize(parts)
        else:
            saved[name] = original.contiguous()
            loaded[name] = original.float()
    return saved, loaded


def prequant_save_shards(saved: dict, out: Path, sharded: bool) -> None:
    """model.safetensors, or two shards + model.safetensors.index.json (as transformers writes them) split in
    name order between a weight and its scale, so that a weight's companion lies in another file."""
    from safetensors.torch import save_file

    names = sorted(saved)
    if not sharded:
        save_file({k: saved[k] for k in names}, str(out / "model.safetensors"), metadata={"format": "pt"})
        return
    cut = next(i for i, k in enumerate(names) if i >= len(names) // 2 and k.endswith(".weight_scale"))
    assert names[cut - 1] == names[cut][: -len("_scale")], names[cut - 1: cut + 1]
    index = {"metadata": {"total_size": sum(saved[k].numel() * saved[k].element_size() for k in names)},
             "weight_map": {}}
    for i, part in enumerate((names[:cut], names[cut:])):
        file = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: saved[k] for k in part}, str(out / file), metadata={"format": "pt"})
        index["weight_map"].update({k: file for k in part})
    write_json(out / "model.safetensors.index.json", index)


def prequant_reference_run(model, processor, img_dir: Path) -> tuple:
    """Prompt logits and greedy ids for PREQUANT_CASES: (json cases, tensors, min greedy gap)."""
    import torch

    eos = list(model.config.text_config.eos_token_id)
    cases, tensors, min_gap = [], {}, float("inf")
    for name in PREQUANT_CASES:
        item = next(c for c in MLLAMA_CASES if c["name"] == name)
        _, enc = mllama_encode(processor, img_dir, [item])
        with torch.no_grad():
            logits = model(**enc).logits
        out = mllama_generate(model, enc)
        seq = enc["input_ids"].shape[1]
        gap = mllama_gaps(out, seq, eos)
        min_gap = min(min_gap, gap)
        tensors[f"case.{name}.logits"] = logits[0].float().contiguous()
        cases.append({"name": name, "image": item["image"], "content": item["content"],
                      "input_ids": enc["input_ids"][0].tolist(),
                      "generated": out.sequences[0, seq:].tolist(),
                      "text": processor.tokenizer.decode(out.sequences[0, seq:], skip_special_tokens=True),
                      "min_greedy_gap": fmt_float(gap)})
    return cases, tensors, min_gap


def cmd_prequant(args) -> None:
    torch = _import_ml()
    import bitsandbytes
    import compressed_tensors
    import transformers
    from safetensors.torch import save_file
    from transformers import MllamaForConditionalGeneration, MllamaProcessor

    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tensors_ref = prequant_tensor_fixtures(out)
    versions = {"transformers": transformers.__version__, "torch": torch.__version__,
                "bitsandbytes": bitsandbytes.__version__, "compressed_tensors": compressed_tensors.__version__}
    write_json(out / "tensors" / "reference.json", {"versions": versions, "blocksize": PREQUANT_BLOCKSIZE,
                                                   **tensors_ref})

    src = MLLAMA_TINY_DIR
    processor = MllamaProcessor.from_pretrained(str(src))
    base = MllamaForConditionalGeneration.from_pretrained(str(src), attn_implementation="eager").eval()
    # the inputs are those of the mllama-tiny reference: the unmodified model reproduces its logits
    with safe_open_pt(src / "reference.safetensors") as f:
        want = f.get_tensor("case.describe_landscape.logits")
    _, base_tensors, _ = prequant_reference_run(base, processor, src / "images")
    assert torch.allclose(base_tensors["case.describe_landscape.logits"], want, atol=1e-5), "inputs differ"

    state = {k: v.detach().clone() for k, v in base.state_dict().items()}
    config = json.loads((src / "config.json").read_text())
    layouts = {
        "nf4": ("mllama-tiny-nf4", prequant_bnb_config(double_quant=False), prequant_bnb_excluded, False),
        "fp8": ("mllama-tiny-fp8", prequant_fp8_config(), prequant_fp8_excluded, True),
    }
    report = {}
    for kind, (folder, qconfig, excluded, sharded) in layouts.items():
        d = out / folder
        d.mkdir()
        linear = prequant_linear_names(base, excluded)
        saved, loaded = prequant_quantize_model(state, kind, linear)
        prequant_save_shards(saved, d, sharded)
        cfg = dict(config, quantization_config=qconfig, torch_dtype="bfloat16")
        (d / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for file in PREQUANT_COPIED_FILES:
            shutil.copy(src / file, d / file)

        model = MllamaForConditionalGeneration.from_pretrained(str(src), attn_implementation="eager").eval()
        model.load_state_dict(loaded, strict=True)
        cases, tensors, gap = prequant_reference_run(model, processor, src / "images")
        assert gap > MLLAMA_MIN_GAP, f"{kind}: greedy gap {gap} too small for an exact comparison"
        save_file(tensors, str(d / "reference.safetensors"), metadata={"format": "pt"})
        changed = max(float((loaded[k] - state[k]).abs().max()) for k in state)
        write_json(d / "reference.json", {
            "versions": versions,
            "source": "mllama-tiny with every tensor rounded to bfloat16, then the listed linear weights "
                      f"quantized ({kind}); reference = transformers on the f32 weights the checkpoint "
                      "dequantizes to",
            "quantized_modules": linear,
            "date_string": MLLAMA_DATE_STRING,
            "max_new_tokens": MLLAMA_MAX_NEW_TOKENS,
            "max_abs_weight_change": fmt_float(changed),
            "cases": cases,
        })
        report[kind] = (folder, len(linear), gap, cases)

    print(f"\nwrote {out}  ({dir_size(out)} bytes)")
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"  {p.relative_to(out)}  {p.stat().st_size}")
    for kind, (folder, n, gap, cases) in report.items():
        print(f"{kind}: {folder}: {n} quantized linears, min greedy gap {gap:.4g}")
        for c in cases:
            print(f"  {c['name']}: {c['generated']}")


def safe_open_pt(path: Path):
    from safetensors import safe_open

    return safe_open(str(path), framework="pt")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("nllb", help="tiny random NLLB fixture (committed)")
    p.add_argument("--out", default=str(NLLB_TINY_DIR), help="output folder (default: %(default)s)")
    p.set_defaults(func=cmd_nllb)

    p = sub.add_parser("nllb-600m-random", help="full-size NLLB-600M architecture, random weights")
    p.add_argument("--out", required=True, help="output folder (~2.5 GB; keep it out of the repo)")
    p.add_argument("--tokenizer-from", default=str(NLLB_TINY_DIR),
                   help="folder whose tokenizer files are copied (default: %(default)s)")
    p.add_argument("--seed", type=int, default=600)
    p.set_defaults(func=cmd_nllb_600m_random)

    p = sub.add_parser("mllama", help="tiny random Llama 3.2 Vision (Mllama) fixture (committed)")
    p.add_argument("--out", default=str(MLLAMA_TINY_DIR), help="output folder (default: %(default)s)")
    p.set_defaults(func=cmd_mllama)

    p = sub.add_parser("llava-next-video", help="tiny random LLaVA-NeXT-Video fixture (committed)")
    p.add_argument("--out", default=str(LLAVA_TINY_DIR), help="output folder (default: %(default)s)")
    p.set_defaults(func=cmd_llava_next_video)

    p = sub.add_parser("llava-next-video-prompts",
                       help="only pipeline_prompts.json of the llava-next-video fixture (no torch needed)")
    p.add_argument("--out", default=str(LLAVA_TINY_DIR), help="fixture folder (default: %(default)s)")
    p.set_defaults(func=cmd_llava_next_video_prompts)

    p = sub.add_parser("prequant", help="pre-quantized layouts: bitsandbytes NF4/FP4 and compressed-tensors FP8 "
                                        "tensors, and mllama-tiny quantized in both (committed)")
    p.add_argument("--out", default=str(PREQUANT_DIR), help="output folder (default: %(default)s)")
    p.set_defaults(func=cmd_prequant)

    p = sub.add_parser("jpeg", help="JPEG decoder parity files + Pillow's decoded RGB (committed)")
    p.add_argument("--out", default=str(JPEG_DIR), help="output folder (default: %(default)s)")
    p.set_defaults(func=cmd_jpeg)

    args = ap.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
