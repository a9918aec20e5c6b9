#!/usr/bin/env python3
"""Baseline for `vishwam bench data`: Python `tokenizers` encode_batch throughput.

Reads every file under --data (one document per file, UTF-8), encodes them all with
`Tokenizer.encode_batch(docs, add_special_tokens=False)` --repeats times and prints one JSON
line: {"mb_per_s": best MB/s (1e6 bytes), "first_pass_mb_per_s", "bytes", "documents", "tokens", "seconds",
"threads", "tokenizers_version", "encode_batch_fast_mb_per_s" (offsets not computed, if
the installed version has it)}. Set the thread count with --threads (RAYON_NUM_THREADS is
set before `tokenizers` is imported). Needs `pip install tokenizers`.
"""

import argparse
import json
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="path of tokenizer.json")
    parser.add_argument("--data", required=True, help="directory of text documents")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        import tokenizers
    except ImportError:
        print(json.dumps({"error": "python package `tokenizers` is not installed (pip install tokenizers)"}))
        return 2

    paths = []
    for root, dirs, files in os.walk(args.data):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        paths.extend(os.path.join(root, f) for f in sorted(files) if not f.startswith("."))
    docs = []
    for path in sorted(paths):
        with open(path, encoding="utf-8", errors="replace") as f:
            docs.append(f.read())
    total_bytes = sum(len(d.encode("utf-8")) for d in docs)
    tokenizer = tokenizers.Tokenizer.from_file(args.tokenizer)

    def pass_seconds(encode):
        seconds, tokens = [], 0
        for _ in range(max(1, args.repeats)):
            start = time.perf_counter()
            encodings = encode(docs, add_special_tokens=False)
            seconds.append(time.perf_counter() - start)
            tokens = sum(len(e.ids) for e in encodings)
        return seconds, tokens

    seconds, tokens = pass_seconds(tokenizer.encode_batch)
    best = min(seconds)
    fast = None
    if hasattr(tokenizer, "encode_batch_fast"):
        fast_seconds, _ = pass_seconds(tokenizer.encode_batch_fast)
        fast = total_bytes / min(fast_seconds) / 1e6
    print(json.dumps({
        "mb_per_s": total_bytes / best / 1e6,
        "bytes": total_bytes,
        "documents": len(docs),
        "tokens": tokens,
        "seconds": best,
        "first_pass_mb_per_s": total_bytes / seconds[0] / 1e6,
        "encode_batch_fast_mb_per_s": fast,
        "threads": args.threads,
        "tokenizers_version": tokenizers.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
