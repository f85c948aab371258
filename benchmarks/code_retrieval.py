"""Docstring→code retrieval of a finished code run alone: the same ``code_retrieval`` that the
text modality's ``extra_evaluation`` runs after the probes, without the probes' features of
every training unit (minutes on a loaded CPU). Writes RUN/retrieval.json.

    python benchmarks/code_retrieval.py runs/python-stdlib-mlm [--data code:PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from selfsup.config import EvalConfig, load_yaml
from selfsup.evaluate.run import random_init_encoder
from selfsup.export import load_encoder
from selfsup.modalities.text import code_retrieval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run or export folder of a code run")
    parser.add_argument("--data", help="the code source (default: the run's data.name)")
    args = parser.parse_args()
    data = load_yaml(args.run / "config.yaml")["data"]
    start = time.time()
    encoder = load_encoder(args.run)
    method = load_yaml(args.run / "config.yaml").get("method", "encoder")
    models = {method: encoder, "random-init": random_init_encoder(encoder, 0)}
    options = {"max_length": data.get("max_length", 128), "skip_bad": bool(data.get("skip_bad"))}
    rows = code_retrieval(models, args.data or data["name"], args.run, options, EvalConfig())
    (args.run / "retrieval.json").write_text(json.dumps(rows, indent=2))
    for row in rows:
        print(
            f"{row['encoder']:28s} MRR {row['mrr']:.4f}  R@1 {row['recall@1']:5.2f}%  "
            f"R@10 {row['recall@10']:5.2f}%  ({row['num_queries']} queries)"
        )
    print(f"{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
