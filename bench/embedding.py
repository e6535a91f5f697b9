"""Embedding benchmark: throughput of every embedder backend and its vectors' cosine to PyTorch fp32, in one script.

    python bench/embedding.py [--texts 1000] [--rounds 5] [--batch-size 64] [--backends torch,openvino-int8] [--smoke]

The texts come from the project's demo generator (agent-memory-like sentences), never from a download. Every
backend encodes the same texts; rounds visit the backends in a rotating order and each round's throughput is
divided by the PyTorch throughput of the same round, so a noisy neighbour on the machine moves both sides of the
ratio. Reported: median texts/s, the median per-round speed-up over torch, and the mean (and minimum) cosine
similarity of each backend's vectors to the torch fp32 vectors of the same texts. Exported graphs are cached
under --cache-dir (default $AMEM_HOME/models); a graph built in this run reports its build time. The last line
printed is one JSON object.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from amem_dagster import demo  # noqa: E402
from resources.embedding_export import export_directory  # noqa: E402
from resources.embedder import BACKENDS, CPU_DEFAULT_BACKEND, EmbedderResource  # noqa: E402

ACCURACY_BAR = 0.99
SPEEDUP_TARGET = 2.5


def sample_texts(count: int, seed: int) -> list[str]:
    # Another seed than the int8 calibration set, so the accuracy sample is not the calibration sample.
    batch = demo.generate(tenants=20, events=count, bad_share=0.0, skew=1.1, seed=seed)
    return [json.loads(value)["text"] for _, value, _ in batch.messages]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=40, help="timed rounds (each: one chunk per backend)")
    parser.add_argument("--chunk", type=int, default=128, help="texts per timed encode")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backends", default=",".join(b for b in BACKENDS if b != "auto"))
    parser.add_argument("--cache-dir", default="", help="exported graphs (default $AMEM_HOME/models)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that proves the benchmark works")
    args = parser.parse_args()
    if args.smoke:
        args.texts, args.rounds, args.chunk = 96, 2, 48
        args.backends = f"torch,{CPU_DEFAULT_BACKEND}"
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    if "torch" not in names:
        names.insert(0, "torch")
    texts = sample_texts(args.texts, args.seed)

    embedders, load_seconds = {}, {}
    for name in names:
        embedder = EmbedderResource(backend=name, device="cpu", batch_size=args.batch_size, cache_dir=args.cache_dir)
        started = time.perf_counter()
        embedder.encode(texts[:8])  # build (first time) or load, and warm up outside the timing
        load_seconds[name] = time.perf_counter() - started
        embedders[name] = embedder

    # Accuracy: every backend encodes the whole sample once.
    vectors = {name: embedders[name].encode(texts) for name in names}
    # Speed: many short rounds, each a chunk of the sample encoded by every backend in a rotating order, so the
    # load other processes put on the machine hits all backends alike; ratios are taken within a round.
    eps: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    cpu_ratios: dict[str, list[float]] = {name: [] for name in names}
    chunks = [texts[i:i + args.chunk] for i in range(0, len(texts), args.chunk)]
    for round_no in range(args.rounds):
        chunk = chunks[round_no % len(chunks)]
        shift = round_no % len(names)
        wall, cpu = {}, {}
        for name in names[shift:] + names[:shift]:
            started, cpu_started = time.perf_counter(), time.process_time()
            embedders[name].encode(chunk)
            wall[name] = time.perf_counter() - started
            cpu[name] = time.process_time() - cpu_started
        for name in names:
            eps[name].append(len(chunk) / wall[name])
            ratios[name].append(wall["torch"] / wall[name])
            cpu_ratios[name].append(cpu["torch"] / max(cpu[name], 1e-9))

    reference = vectors["torch"]
    tokens = [len(t.split()) for t in texts]
    results = {}
    for name in names:
        cosines = np.sum(vectors[name] * reference, axis=1)
        results[name] = {
            "eps": round(statistics.median(eps[name]), 1),
            "speedup": round(statistics.median(ratios[name]), 3),
            "speedup_p25_p75": [round(float(q), 3) for q in np.percentile(ratios[name], [25, 75])],
            "cpu_time_speedup": round(statistics.median(cpu_ratios[name]), 3),
            "cosine_mean": round(float(cosines.mean()), 5),
            "cosine_min": round(float(cosines.min()), 5),
            "load_seconds": round(load_seconds[name], 2),
        }
    qualifying = [n for n in names if results[n]["cosine_mean"] >= ACCURACY_BAR]
    fastest = max(qualifying, key=lambda n: results[n]["speedup"])
    default = CPU_DEFAULT_BACKEND if CPU_DEFAULT_BACKEND in results else fastest

    print(f"{len(texts)} demo texts (median {statistics.median(tokens)} words), batch {args.batch_size}, "
          f"{args.rounds} rounds of {args.chunk} texts, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'backend':15} {'texts/s':>9} {'× torch':>8} {'IQR':>11} {'cpu ×':>6} {'cos mean':>9} {'cos min':>8} "
          f"{'load s':>7}")
    for name in names:
        r = results[name]
        iqr = "{:.2f}-{:.2f}".format(*r["speedup_p25_p75"])
        print(f"{name:15} {r['eps']:9.1f} {r['speedup']:8.2f} {iqr:>11} {r['cpu_time_speedup']:6.2f} "
              f"{r['cosine_mean']:9.5f} {r['cosine_min']:8.5f} {r['load_seconds']:7.1f}")
    print(f"fastest backend with mean cosine >= {ACCURACY_BAR}: {fastest}; CPU default: {CPU_DEFAULT_BACKEND}")
    summary = {
        "torch_eps": results["torch"]["eps"],
        "default_backend": default,
        "default_eps": results[default]["eps"],
        "default_speedup": results[default]["speedup"],
        "default_cosine": results[default]["cosine_mean"],
        "fastest_qualifying": fastest,
        "meets_speedup_target": results[default]["speedup"] >= SPEEDUP_TARGET,
        "meets_accuracy_bar": results[default]["cosine_mean"] >= ACCURACY_BAR,
        "texts": len(texts), "rounds": args.rounds, "chunk": args.chunk, "batch_size": args.batch_size,
        "cores": os.cpu_count(), "load_average": round(os.getloadavg()[0], 2),
        "backends": results,
        "graph_dirs": {n: str(export_directory(embedders[n].model_path, n,
                                                                 embedders[n].model_cache_root))
                       for n in names if n != "torch"},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
