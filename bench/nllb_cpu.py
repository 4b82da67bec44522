#!/usr/bin/env python3
"""NLLB-200 600M translation on CPU: transformers vs CTranslate2 vs vislingo (candle).

One invocation runs, in this order, each engine on each workload (N English sentences x 3 target
languages, greedy, exactly T generated tokens per output) with the same thread count:

  transformers  the reference pipeline: one `model.generate` per target language over the batch of
                sentences, forced_bos_token_id=<lang>, min_new_tokens=max_new_tokens=T, f32,
                torch.inference_mode
  ctranslate2   the same checkpoint converted to float32, one `translate_batch` over all
                sentences x languages with target_prefix=[[lang]], beam_size=1,
                min_decoding_length=max_decoding_length=T (CTranslate2 counts the prefix token)
  vislingo      the release binary `nllb-cpu-bench` (Translator::translate_many: one encoder pass over
                the sentences + one batched greedy decode over sentences x languages)

T counts the forced language token as the first generated token (transformers' convention), so every
output is [</s>, lang, t_1 .. t_{T-1}] and every row takes T decoder steps in every engine; the driver
checks that for every output of every engine and fails otherwise.

Timings are end to end from text to text (tokenize, generate, detokenize), model loading excluded:
median of --repeats runs after --warmup untimed runs. Results: a Markdown table on stdout and
bench/out/nllb_cpu.json.

Run `bash bench/nllb_cpu.sh` to make the random-weight checkpoint, build the binary and run this.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

REPO = Path(__file__).resolve().parent.parent
ENGINES = ("transformers", "ctranslate2", "vislingo")
# Other processes below this many busy cores do not count as disturbing a run: an engine's threads may also wait
# for a CPU because of each other (more runnable threads than cores), which is the engine's own doing.
OTHERS_IDLE = 0.1


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_model() -> dict:
    info = {"machine": platform.machine(), "logical_cpus": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["model_name"] = fields.get("Model name")
        info["cores_per_socket"] = fields.get("Core(s) per socket")
        info["threads_per_core"] = fields.get("Thread(s) per core")
        flags = fields.get("Flags", "").split()
        info["avx2"] = "avx2" in flags
        info["avx512f"] = "avx512f" in flags
        info["avx512_bf16"] = "avx512_bf16" in flags
        info["avx512_vnni"] = "avx512_vnni" in flags
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def busy_cpu_s() -> float:
    """CPU seconds every process on the machine has spent busy so far (/proc/stat, all CPUs)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_delay_s() -> float:
    """Seconds this process's threads have spent runnable but waiting for a CPU (/proc/self/task/*/schedstat)."""
    total = 0
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return float("nan")
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            pass  # a thread that just ended
    return total / 1e9


class Contention:
    """While a block runs: how many of this process's threads were on average waiting for a CPU (`cpu_wait`; 0 =
    never delayed, the number that decides whether a run was disturbed), and how many cores other processes kept
    busy (`other_cores`; they may use cores this process leaves idle without slowing it)."""

    def __enter__(self):
        self.wall, self.busy, self.own, self.delay = time.perf_counter(), busy_cpu_s(), own_cpu_s(), run_delay_s()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.wall
        other = (busy_cpu_s() - self.busy) - (own_cpu_s() - self.own)
        self.other_cores = max(other, 0.0) / wall if wall > 0 else 0.0
        self.cpu_wait = (run_delay_s() - self.delay) / wall if wall > 0 else 0.0
        return False


def wait_idle(limit_s: float, threshold: float = 0.3, window_s: float = 5.0) -> None:
    """Waits (up to `limit_s`) until other processes keep fewer than `threshold` cores busy for `window_s`."""
    if limit_s <= 0:
        return
    deadline = time.monotonic() + limit_s
    while True:
        with Contention() as c:
            time.sleep(window_s)
        if c.other_cores < threshold:
            return
        if time.monotonic() > deadline:
            log(f"machine still busy ({c.other_cores:.2f} other cores) after {limit_s:.0f} s; going on")
            return
        log(f"waiting for an idle machine ({c.other_cores:.2f} other cores busy)")


def summarize(times: list[float], sentences: int, langs: int, new_tokens: int) -> dict:
    median = statistics.median(times)
    rows = sentences * langs
    return {
        "times_s": times,
        "median_s": median,
        "min_s": min(times),
        "translations_per_s": rows / median,
        "tokens_per_s": rows * new_tokens / median,
    }


def check_outputs(engine: str, outputs: list[list[int]], lang_ids: list[int], rows: int, new_tokens: int,
                  start_id: int, eos_id: int) -> None:
    """Every output must be [start, lang, T-1 non-end tokens]; rows sentence-major, languages inner."""
    if len(outputs) != rows:
        raise SystemExit(f"{engine}: {len(outputs)} outputs for {rows} rows")
    for row, ids in enumerate(outputs):
        lang = lang_ids[row % len(lang_ids)]
        if len(ids) != 1 + new_tokens or ids[0] != start_id or ids[1] != lang or eos_id in ids[2:]:
            raise SystemExit(
                f"{engine}: row {row} should be [{start_id}, {lang}, {new_tokens - 1} tokens] but is "
                f"{len(ids)} ids: {ids}")


# --------------------------------------------------------------------------- #
# engines
# --------------------------------------------------------------------------- #

def run_transformers(args, tok, sentences_of, lang_ids) -> dict:
    import torch
    import transformers
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(args.model, torch_dtype=torch.float32).eval()
    results = {}
    for n in args.workloads:
        sentences = sentences_of(n)

        def once():
            with torch.inference_mode():
                batch = tok(sentences, return_tensors="pt", padding=True)
                per_lang = []
                for lang_id in lang_ids:
                    out = model.generate(
                        **batch, forced_bos_token_id=lang_id, num_beams=1, do_sample=False,
                        max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
                    tok.batch_decode(out, skip_special_tokens=True)
                    per_lang.append(out.tolist())
            # rows sentence-major, languages inner
            return [per_lang[l][s] for s in range(len(sentences)) for l in range(len(lang_ids))], batch

        wait_idle(args.wait_idle)
        times, loads, discarded, (outs, batch) = timed(once, args, f"transformers n={n}")
        results[n] = summarize(times, n, len(lang_ids), args.new_tokens)
        results[n].update(contention=loads, discarded_runs=discarded)
        results[n]["outputs"] = outs
        results[n]["source_tokens"] = int(batch["attention_mask"].sum())
    results["version"] = transformers.__version__
    results["torch_version"] = torch.__version__
    results["threads"] = torch.get_num_threads()
    del model
    gc.collect()
    return results


def convert_ct2(args) -> Path:
    ct2_dir = Path(args.ct2_dir)
    if (ct2_dir / "model.bin").is_file():
        return ct2_dir
    from ctranslate2.converters import TransformersConverter

    class Converter(TransformersConverter):
        # ctranslate2 >= 4.7 calls from_pretrained(..., dtype=...), which transformers 4.46 names torch_dtype.
        def load_model(self, model_class, model_name_or_path, **kwargs):
            if "dtype" in kwargs:
                kwargs["torch_dtype"] = kwargs.pop("dtype")
            return super().load_model(model_class, model_name_or_path, **kwargs)

    log(f"converting {args.model} to CTranslate2 float32 in {ct2_dir}")
    start = time.perf_counter()
    Converter(str(args.model)).convert(str(ct2_dir), quantization="float32", force=True)
    log(f"converted in {time.perf_counter() - start:.1f} s")
    return ct2_dir


def run_ctranslate2(args, tok, sentences_of, lang_ids, langs) -> dict:
    import ctranslate2

    ct2_dir = convert_ct2(args)
    translator = ctranslate2.Translator(str(ct2_dir), device="cpu", compute_type="float32",
                                        intra_threads=args.threads, inter_threads=1)
    results = {}
    for n in args.workloads:
        sentences = sentences_of(n)

        def once():
            ids = tok(sentences)["input_ids"]
            source = [tok.convert_ids_to_tokens(row) for row in ids]
            rows_src = [source[s] for s in range(len(sentences)) for _ in langs]
            prefix = [[lang] for _ in sentences for lang in langs]
            res = translator.translate_batch(
                rows_src, target_prefix=prefix, beam_size=1,
                max_decoding_length=args.new_tokens, min_decoding_length=args.new_tokens)
            hyp_ids = [tok.convert_tokens_to_ids(r.hypotheses[0]) for r in res]
            tok.batch_decode(hyp_ids, skip_special_tokens=True)
            return [[tok.eos_token_id] + h for h in hyp_ids], sum(len(r) for r in ids)

        wait_idle(args.wait_idle)
        times, loads, discarded, (outs, source_tokens) = timed(once, args, f"ctranslate2 n={n}")
        results[n] = summarize(times, n, len(lang_ids), args.new_tokens)
        results[n].update(contention=loads, discarded_runs=discarded)
        results[n]["outputs"] = outs
        results[n]["source_tokens"] = source_tokens
    results["version"] = ctranslate2.__version__
    results["threads"] = args.threads
    del translator
    gc.collect()
    return results


def run_vislingo(args) -> dict:
    binary = Path(args.bin)
    if not binary.is_file():
        raise SystemExit(f"{binary} missing: cargo build --release -p vislingo-bench (or pass --bin)")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    results = {}
    for n in args.workloads:
        cmd = [str(binary), "--model", str(args.model), "--sentences", str(args.sentences), "--count", str(n),
               "--langs", ",".join(args.langs), "--new-tokens", str(args.new_tokens),
               "--repeats", str(args.repeats), "--warmup", str(args.warmup),
               "--max-cpu-wait", str(args.max_cpu_wait)]
        if args.max_runs:
            cmd += ["--max-runs", str(args.max_runs)]
        if args.profile:
            cmd.append("--profile")
        log("+ RAYON_NUM_THREADS=%d %s" % (args.threads, " ".join(cmd)))
        wait_idle(args.wait_idle)
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"nllb-cpu-bench failed with exit code {proc.returncode}")
        line = json.loads(proc.stdout.strip().splitlines()[-1])
        results[n] = summarize(line["times_s"], n, line["langs"], args.new_tokens)
        for key in ("outputs", "source_tokens", "load_s", "threads", "contention", "discarded_runs", "profile"):
            if key in line:
                results[n][key] = line[key]
    results["version"] = "vislingo-bench " + subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    results["threads"] = args.threads
    return results


def timed(once, args, label):
    """Runs `once` --warmup times untimed, then until --repeats runs were undisturbed: at most --max-cpu-wait
    threads waiting for a CPU on average, or other processes idle (at most --max-runs timed runs, then the least
    disturbed ones are kept).
    Returns (times, per-run contention, discarded runs, the last result)."""
    times, loads, discarded, result = [], [], [], None
    max_runs = args.warmup + max(args.max_runs or 3 * args.repeats, args.repeats)
    run = 0
    while len(times) < args.repeats:
        if run == max_runs:
            # Out of attempts: complete with the least disturbed of the discarded runs (flagged by cpu_wait).
            discarded.sort(key=lambda d: d["cpu_wait"])
            while len(times) < args.repeats:
                d = discarded.pop(0)
                times.append(d.pop("time_s"))
                loads.append(d)
            log(f"{label}: machine busy through {max_runs} runs; kept the least disturbed ones")
            break
        with Contention() as c:
            start = time.perf_counter()
            result = once()
            elapsed = time.perf_counter() - start
        load = {"cpu_wait": c.cpu_wait, "other_cores_busy": c.other_cores}
        if run < args.warmup:
            verdict = " (warm-up)"
        elif c.cpu_wait > args.max_cpu_wait and c.other_cores > OTHERS_IDLE:
            discarded.append({"time_s": elapsed, **load})
            verdict = " (discarded: waited for CPUs)"
        else:
            times.append(elapsed)
            loads.append(load)
            verdict = ""
        log(f"{label} run {run}: {elapsed:.3f} s, waiting for a CPU {c.cpu_wait:.2f} threads, "
            f"others busy {c.other_cores:.2f} cores{verdict}")
        run += 1
    return times, loads, discarded, result


# --------------------------------------------------------------------------- #
# report
# --------------------------------------------------------------------------- #

def agreement(a: list[list[int]], b: list[list[int]]) -> dict:
    """Rows with identical tokens, and the mean share of tokens before the first difference."""
    same = sum(x == y for x, y in zip(a, b))
    prefix = []
    for x, y in zip(a, b):
        k = 0
        while k < min(len(x), len(y)) and x[k] == y[k]:
            k += 1
        prefix.append(k / max(len(x), 1))
    return {"identical_rows": same, "rows": len(a), "mean_common_prefix": sum(prefix) / max(len(prefix), 1)}


def markdown(report: dict) -> str:
    eng = report["engines"]
    names = {
        "transformers": f"transformers {eng['transformers']['version']}" if "transformers" in eng else None,
        "ctranslate2": f"CTranslate2 {eng['ctranslate2']['version']}" if "ctranslate2" in eng else None,
        "vislingo": "vislingo (candle)" if "vislingo" in eng else None,
    }
    langs = len(report["langs"])
    lines = [
        f"| Workload | Engine | Median (s) | Translations/s | Generated tokens/s | Speed vs transformers | Speed vs CTranslate2 | CPU wait, max (threads) | Runs discarded |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in report["workloads"]:
        key = str(n)
        base_tr = eng.get("transformers", {}).get(key, {}).get("median_s")
        base_ct = eng.get("ctranslate2", {}).get(key, {}).get("median_s")
        for e in ENGINES:
            if e not in eng:
                continue
            r = eng[e][key]
            vs_tr = f"{base_tr / r['median_s']:.2f}x" if base_tr else "-"
            vs_ct = f"{base_ct / r['median_s']:.2f}x" if base_ct else "-"
            lines.append(
                f"| {n} sentence{'s' if n > 1 else ''} x {langs} languages | {names[e]} | {r['median_s']:.3f} | "
                f"{r['translations_per_s']:.2f} | {r['tokens_per_s']:.1f} | {vs_tr} | {vs_ct} | "
                f"{max(c['cpu_wait'] for c in r['contention']):.2f} | {len(r['discarded_runs'])} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("/opt/vl/nllb-600m-random"),
                    help="transformers checkpoint folder (default: %(default)s)")
    ap.add_argument("--ct2-dir", type=Path, default=None,
                    help="CTranslate2 conversion of --model, made if missing (default: <model>-ct2)")
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    ap.add_argument("--bin", type=Path, default=target_dir / "release" / "nllb-cpu-bench",
                    help="vislingo benchmark binary (default: %(default)s)")
    ap.add_argument("--sentences", type=Path, default=REPO / "bench" / "data" / "sentences_en.txt")
    ap.add_argument("--workloads", default="1,30", help="sentence counts, comma-separated (default: %(default)s)")
    ap.add_argument("--langs", default="fra_Latn,spa_Latn,hin_Deva")
    ap.add_argument("--new-tokens", type=int, default=32,
                    help="generated tokens per output, the forced language token included (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="threads for every engine (default: %(default)s)")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--max-cpu-wait", type=float, default=float("inf"),
                    help="discard and rerun a timed run during which the engine's threads spent on average more "
                         "than this many thread-seconds per second waiting for a CPU while other processes kept "
                         f"more than {OTHERS_IDLE} cores busy (default: keep every run; 0.1 suits a shared machine)")
    ap.add_argument("--max-runs", type=int, default=None,
                    help="timed runs at most per engine and workload, discarded ones included (default: 3 x repeats)")
    ap.add_argument("--wait-idle", type=float, default=0,
                    help="before each engine/workload, wait up to this many seconds for other processes to "
                         "leave the CPUs idle (default: %(default)s, no wait)")
    ap.add_argument("--profile", action="store_true", help="ask nllb-cpu-bench for a per-phase breakdown")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "nllb_cpu.json")
    args = ap.parse_args(argv)
    args.workloads = [int(x) for x in args.workloads.split(",")]
    args.langs = [x.strip() for x in args.langs.split(",")]
    args.ct2_dir = args.ct2_dir or Path(str(args.model).rstrip("/") + "-ct2")
    engines = [e.strip() for e in args.engines.split(",")]
    if unknown := set(engines) - set(ENGINES):
        raise SystemExit(f"unknown engines {unknown}")

    # Thread counts before torch or ctranslate2 start their pools.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["MKL_NUM_THREADS"] = str(args.threads)
    import torch
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    from transformers import AutoTokenizer
    import transformers
    transformers.logging.set_verbosity_error()

    all_sentences = [l.strip() for l in args.sentences.read_text(encoding="utf-8").splitlines() if l.strip()]
    if max(args.workloads) > len(all_sentences):
        raise SystemExit(f"{args.sentences} has {len(all_sentences)} sentences")
    tok = AutoTokenizer.from_pretrained(str(args.model), src_lang="eng_Latn")
    lang_ids = tok.convert_tokens_to_ids(args.langs)
    start_id, eos_id = 2, tok.eos_token_id
    sentences_of = lambda n: all_sentences[:n]  # noqa: E731

    report = {
        "benchmark": "nllb_cpu",
        "model": str(args.model),
        "cpu": cpu_model(),
        "threads": args.threads,
        "workloads": args.workloads,
        "langs": args.langs,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "engines": {},
    }
    for engine in engines:
        log(f"== {engine}")
        if engine == "transformers":
            res = run_transformers(args, tok, sentences_of, lang_ids)
        elif engine == "ctranslate2":
            res = run_ctranslate2(args, tok, sentences_of, lang_ids, args.langs)
        else:
            res = run_vislingo(args)
        for n in args.workloads:
            check_outputs(engine, res[n]["outputs"], lang_ids, n * len(lang_ids), args.new_tokens, start_id, eos_id)
        report["engines"][engine] = {str(k): v for k, v in res.items()}
    for engine in engines:
        for n in args.workloads:
            loads = report["engines"][engine][str(n)]["contention"]
            if any(c["cpu_wait"] > 0.1 and c["other_cores_busy"] > OTHERS_IDLE for c in loads):
                wait = max(c["cpu_wait"] for c in loads)
                log(f"WARNING: during {engine} n={n} up to {wait:.2f} threads were waiting for a CPU on average "
                    "while other processes ran; its times may be inflated, rerun on an idle machine")
    log(f"every output of every engine has {args.new_tokens} generated tokens (language token included)")

    # Same inputs and (near-)same outputs: agreement with transformers, source token counts.
    if "transformers" in engines:
        for engine in engines:
            if engine == "transformers":
                continue
            for n in args.workloads:
                r, ref = report["engines"][engine][str(n)], report["engines"]["transformers"][str(n)]
                r["agreement_with_transformers"] = agreement(r["outputs"], ref["outputs"])
                if r["source_tokens"] != ref["source_tokens"]:
                    log(f"WARNING: {engine} n={n} encoded {r['source_tokens']} source tokens, "
                        f"transformers {ref['source_tokens']}")

    table = markdown(report)
    report["table_markdown"] = table
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(table)
    for engine in engines:
        for n in args.workloads:
            a = report["engines"][engine][str(n)].get("agreement_with_transformers")
            if a:
                print(f"{engine} n={n}: {a['identical_rows']}/{a['rows']} outputs identical to transformers, "
                      f"mean common prefix {a['mean_common_prefix']:.0%}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
