"""The ``pairloss`` command: ``train``, ``compare``, ``eval``, ``embed``, ``search``, ``losses``
and ``bench``.

Every error that comes from the user's input (an unknown loss, a missing data set, a bad
option or flag value, a file that cannot be read or written) is printed as one line
``pairloss: error: ...`` with exit status 2, never a traceback. Settings are checked before
any data is loaded or any file is written.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from typing import Any, NoReturn

from .catalogue import LOSSES
from .errors import PairLossError

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _count(text: str) -> int:
    """An argparse type: an integer from 1 to 10,000."""
    value = _integer(text)
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to 10000, got {text!r}")
    return value


def _integer(text: str) -> int:
    """An argparse type: a decimal integer (``1e3`` or ``1.5`` are refused)."""
    try:
        return int(text.strip().replace("_", ""), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _real(text: str) -> float:
    """An argparse type: a finite real number (``nan`` and ``inf`` are refused here)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _bytes(text: str) -> int:
    """An argparse type: a byte count, e.g. ``1073741824``, ``512M`` or ``2G`` (powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, flags=re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"expected bytes such as 512M or 2G, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _size(text: str) -> list[int]:
    """An argparse type: an image size ``N`` (square) or ``HxW``."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected N or HxW (e.g. 64 or 112x92), got {text!r}")
    height = int(match.group(1))
    return [height, int(match.group(2) or height)]


def _dataset_defaults(text: str, field: str, none: str = "") -> str:
    """``text (default X; <data set> Y, ...)``: the help of a setting whose default depends on
    the data set (``none`` says what a ``None`` default means)."""
    from .train.config import DATASET_DEFAULTS, TrainConfig

    def shown(value: object) -> str:
        return none if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    base = getattr(TrainConfig, field)
    others = [f"{n} {shown(v[field])}" for n, v in DATASET_DEFAULTS.items() if field in v]
    return f"{text} (default {shown(base)}" + ("; " + ", ".join(others) if others else "") + ")"


def _run_flags() -> tuple[tuple[str, str, Any, str], ...]:
    """(flag, config field, type, help) shared by ``train`` and ``compare``."""
    from .train.tasks import DATASETS

    return (
        ("--dataset", "dataset", str, f"data set: {', '.join(DATASETS)} (default fashion-mnist)"),
        ("--data-dir", "data_dir", str, "where the data set is (used as given, never a fallback)"),
        ("--labels", "labels", str, "label file for --dataset embeddings"),
        ("--protocol", "protocol", str, "retrieval or face (default: the data set's)"),
        ("--miner", "miner", str, "miner name, e.g. multi_similarity or batch_hard"),
        (
            "--model",
            "model",
            str,
            "cnn28, face, mlp, scorer, minilm (text) or torchvision:<name> (default: the data "
            "set's)",
        ),
        ("--pretrained", "pretrained", str, "torchvision weights: default or a .pth file"),
        (
            "--embedding-size",
            "embedding_size",
            _integer,
            _dataset_defaults("output size of the model", "embedding_size"),
        ),
        ("--epochs", "epochs", _integer, _dataset_defaults("epochs", "epochs")),
        (
            "--batches-per-epoch",
            "batches_per_epoch",
            _integer,
            _dataset_defaults("P x K batches per epoch", "batches_per_epoch", "one pass"),
        ),
        ("-P", "p", _integer, _dataset_defaults("classes (ranking: queries) per batch", "p")),
        ("-K", "k", _integer, _dataset_defaults("samples per class in a batch", "k")),
        (
            "--batch-size",
            "batch_size",
            _integer,
            _dataset_defaults("pairs or lists per batch of the text data sets", "batch_size", "-"),
        ),
        ("--lr", "lr", _real, _dataset_defaults("AdamW learning rate", "lr")),
        ("--weight-decay", "weight_decay", _real, "AdamW weight decay (default 1e-4)"),
        (
            "--loss-lr-mult",
            "loss_lr_mult",
            _real,
            "learning-rate factor of the loss's parameters (default 10)",
        ),
        (
            "--warmup-epochs",
            "warmup_epochs",
            _real,
            _dataset_defaults("linear warm-up epochs", "warmup_epochs"),
        ),
        ("--grad-clip", "grad_clip", _real, "max gradient norm, 0 = off (default 5)"),
        ("--seed", "seed", _integer, "seed of everything random (default 0)"),
        (
            "--train-classes",
            "train_classes",
            _integer,
            _dataset_defaults(
                "how many first classes train; the rest are unseen",
                "train_classes",
                "the standard split, else half",
            ),
        ),
        (
            "--held-out",
            "held_out",
            _integer,
            "how many last classes are unseen (instead of --train-classes)",
        ),
        (
            "--val-fraction",
            "val_fraction",
            _real,
            _dataset_defaults("share of training images for validation", "val_fraction"),
        ),
        (
            "--test-fraction",
            "test_fraction",
            _real,
            "share of training-class images held out for testing where there is no test split "
            "(default 0.2; cub200, cars196, sop 0)",
        ),
        (
            "--image-size",
            "image_size",
            _size,
            "resize images to N or HxW (default: the data set's)",
        ),
        (
            "--augment",
            "augment",
            str,
            _dataset_defaults("none or a comma list of flip, crop, jitter", "augment"),
        ),
        ("--device", "device", str, "auto (CUDA when present), cpu, cuda or cuda:N (default auto)"),
        ("--eval-every", "eval_every", _integer, "validate every N epochs (default 1)"),
        (
            "--max-eval",
            "max_eval",
            _integer,
            "evaluate on a seeded subset of N samples per test set",
        ),
        ("--eval-memory", "eval_memory", _bytes, "memory budget of an evaluation (default 1G)"),
        (
            "--pca-dim",
            "pca_dim",
            _integer,
            "components of the PCA baseline (default: the embedding size)",
        ),
        ("--threads", "threads", _integer, "torch CPU threads (default: torch's)"),
        ("--workers", "workers", _integer, "threads decoding image files (default 4)"),
        (
            "--nproc",
            "nproc",
            _integer,
            "data-parallel CPU processes, the loss on the global batch (default 1; torchrun "
            "sets its own)",
        ),
        ("--chunk-size", "chunk_size", _integer, "GradCache: embed the batch N rows at a time"),
        ("--memory-size", "memory_size", _integer, "cross-batch memory of N embeddings (XBM)"),
    )


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line ``pairloss: error: ...`` and exit status 2
    (argparse's default prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as one line and exit with status 2."""
        command = self.prog.removeprefix("pairloss").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"pairloss: error: {where}{message} (see `{self.prog} --help`)\n")


def _losses(args: argparse.Namespace) -> int:
    rows = [(e.name, e.family, e.formula, e.paper) for e in LOSSES]
    if args.family:
        rows = [r for r in rows if args.family in r[1]]
        if not rows:
            families = sorted({e.family for e in LOSSES})
            raise PairLossError(
                f"family: no loss in a family containing {args.family!r}; families: "
                + ", ".join(families)
            )
    widths = [
        max(len(r[i]) for r in rows + [("name", "family", "formula", "paper")]) for i in range(3)
    ]
    header = ("name", "family", "formula", "paper")
    for row in [header, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(row[:3], widths)) + "  " + row[3])
    return 0


def _config(args: argparse.Namespace, **extra: Any):
    from .train.config import TrainConfig, make_config, parse_options

    flags = {field: getattr(args, field) for _, field, _, _ in _run_flags()}
    flags["amp"] = True if args.amp else None
    flags.update(extra)
    options = parse_options(args.option, "--option")
    if "miner" in options:  # -o miner=NAME chooses the miner, as in `compare --losses`
        miner = options.pop("miner")
        if flags["miner"] is not None and flags["miner"] != miner:
            raise PairLossError(
                f"--option miner={miner}: conflicts with --miner {flags['miner']}; give one"
            )
        flags["miner"] = miner if isinstance(miner, str) else str(miner)
    flags["loss_options"] = options
    flags["out"] = args.out
    config = make_config(toml=args.config, **flags)
    if args.out is None and config.out == TrainConfig.out:  # neither flag nor file chose one
        config = config.replace(out=args.default_out)
    return config


def _train(args: argparse.Namespace) -> int:
    from .train.run import check_run, format_table, train_run

    config = _config(args, loss=args.loss)
    check_run(config, resume=args.resume)
    result = train_run(config, progress=not args.quiet, resume=args.resume)
    if result is None:  # a rank other than 0 of a torchrun group: rank 0 reports
        return 0
    settings = list(next(iter(result.representations.values())))
    metrics = result.columns
    chosen = dict(metrics).get(result.selection_metric, result.selection_metric)
    print(f"kept the model of epoch {result.selected_epoch} (best validation {chosen})")
    print("test data, every representation, best first:")
    for line in format_table(result.representations, settings, metrics).splitlines():
        print("  " + line)
    print(result.verdict)
    s = result.seconds
    print(
        f"wall time {s['total']:.0f} s (training {s['training']:.0f} s, evaluation "
        f"{s['evaluation']:.0f} s, report {s['report']:.0f} s; CPU time {s['cpu']:.0f} s)"
    )
    print(f"report: {result.report}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .train.run import check_compare, compare, leaderboard_table

    config = _config(args)
    seeds = [config.seed + i for i in range(args.seeds)]
    check_compare(config, args.losses, seeds)
    rows = compare(config, args.losses, seeds, progress=not args.quiet)
    print(leaderboard_table(rows))
    print(f"leaderboard: {config.out}/leaderboard.html")
    return 0


def _print_results(results: dict[str, dict[str, float]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(results, indent=2))
        return
    for setting, values in results.items():
        print(f"{setting}:")
        for key, value in values.items():
            print(f"  {key:>14}: {value:.4f}")


def _eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .train.run import evaluate_file, evaluate_run

    path = Path(args.path)
    if path.is_dir():
        for flag, value in (("--labels", args.labels), ("--protocol", args.protocol)):
            if value is not None:
                raise PairLossError(f"{flag}: applies to embedding files, not to the run {path}")
        result = evaluate_run(path, args.data_dir)
    elif path.is_file():
        if args.data_dir is not None:
            raise PairLossError(f"--data-dir: applies to run folders, not to the file {path}")
        result = evaluate_file(path, args.labels, args.protocol or "retrieval")
    else:
        raise PairLossError(f"path: {path} does not exist; expected a run folder or a file")
    _print_results(result, args.json)
    return 0


def _embed(args: argparse.Namespace) -> int:
    from .train.use import embed_dataset, embed_files, load_trained, write_embeddings

    trained = load_trained(args.run)
    if args.input and (args.dataset or args.data_dir):
        raise PairLossError("--input: give either --input FILES or --dataset/--data-dir, not both")
    if args.input:
        emb, names = embed_files(trained, args.input, args.device, args.backbone)
        labels = None
    else:
        emb, names, labels = embed_dataset(
            trained, args.dataset, args.data_dir, args.device, args.backbone
        )
    for path in write_embeddings(args.out, emb, names, labels, args.faiss):
        print(path)
    print(f"{emb.shape[0]} embeddings of {emb.shape[1]} values")
    return 0


def _search(args: argparse.Namespace) -> int:
    from .train.use import embed_files, load_trained, read_gallery, search

    trained = load_trained(args.run)
    gallery, names, labels = read_gallery(args.gallery)
    queries, query_names = embed_files(trained, args.input, args.device)
    scores, indices = search(queries, gallery, args.k)
    found = [
        {
            "query": q,
            "neighbours": [
                {
                    "rank": r + 1,
                    "score": float(scores[i, r]),
                    "item": names[int(indices[i, r])],
                    **({"label": int(labels[int(indices[i, r])])} if labels is not None else {}),
                }
                for r in range(indices.shape[1])
            ],
        }
        for i, q in enumerate(query_names)
    ]
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    for entry in found:
        print(entry["query"])
        for n in entry["neighbours"]:
            label = f"  label {n['label']}" if "label" in n else ""
            print(f"  {n['rank']:>3}  {n['score']:.4f}  {n['item']}{label}")
    return 0


def _add_run_flags(p: argparse.ArgumentParser, out_default: str) -> None:
    p.add_argument("--config", default=None, help="TOML file with settings (flags override)")
    for flag, field, kind, text in _run_flags():
        p.add_argument(flag, dest=field, type=kind, default=None, help=text)
    p.add_argument("--amp", action="store_true", help="mixed precision (fp16 on CUDA, bf16 on CPU)")
    p.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="loss option, repeatable (e.g. -o margin=0.5)",
    )
    p.add_argument("--out", default=None, help=f"output folder (default {out_default})")
    p.set_defaults(default_out=out_default)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pairloss`` command."""
    parser = OneLineParser(prog="pairloss", description="Pair-based losses.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("losses", help="list the losses with family, formula and paper")
    p.add_argument("--family", default=None, help="only losses whose family contains this")
    p.set_defaults(func=_losses)

    p = sub.add_parser("train", help="train an embedding model and write a report")
    p.add_argument(
        "--loss",
        default=None,
        help="loss name (see `pairloss losses`; default multi_similarity; sts-b and "
        "sentence-pairs cosent, sts-b-preference dpo)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    _add_run_flags(p, "runs/train")
    p.set_defaults(func=_train)

    p = sub.add_parser("compare", help="train several losses under one protocol and budget")
    p.add_argument(
        "--losses",
        nargs="+",
        required=True,
        metavar="LOSS[:KEY=VALUE,...]",
        help="losses to compare, e.g. multi_similarity contrastive triplet:miner=batch_hard",
    )
    p.add_argument(
        "--seeds", type=_count, default=1, help="seeds per loss (mean +- std when > 1; default 1)"
    )
    _add_run_flags(p, "runs/compare")
    p.set_defaults(func=_compare)

    p = sub.add_parser("eval", help="evaluate a run folder or an embedding file")
    p.add_argument("path", help="run folder, or a .npy/.pt embedding file")
    p.add_argument("--labels", default=None, help="label file for an embedding file")
    p.add_argument(
        "--protocol",
        default=None,
        choices=("retrieval", "face"),
        help="for an embedding file (default retrieval)",
    )
    p.add_argument("--data-dir", default=None, help="where the run's data set is now")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_eval)

    p = sub.add_parser("embed", help="embeddings (.npy) of a data set or of files with a run")
    p.add_argument("run", help="a run folder (from pairloss train)")
    p.add_argument("--dataset", default=None, help="a data set name (default: the run's)")
    p.add_argument("--data-dir", default=None, help="where that data set is")
    p.add_argument("--input", nargs="+", default=None, metavar="FILE", help="image or vector files")
    p.add_argument("--out", required=True, help="output prefix: PREFIX.npy, PREFIX.txt, ...")
    p.add_argument("--faiss", action="store_true", help="also write PREFIX.faiss (cosine index)")
    p.add_argument("--backbone", action="store_true", help="the backbone's features instead")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.set_defaults(func=_embed)

    p = sub.add_parser("search", help="nearest neighbours of files among embedded items")
    p.add_argument("run", help="the run folder whose model embedded the gallery")
    p.add_argument("--gallery", required=True, help="prefix written by `pairloss embed`")
    p.add_argument("--input", nargs="+", required=True, metavar="FILE", help="query files")
    p.add_argument("-k", type=_count, default=5, help="neighbours per query (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.set_defaults(func=_search)

    sub.add_parser(
        "bench",
        help="speed and memory against pytorch-metric-learning (`pairloss bench --help`)",
        add_help=False,
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pairloss`` command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # every later argument belongs to the benchmark's own parser
        from .bench import main as bench_main

        return bench_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except PairLossError as exc:
        return _fail(str(exc))
    except OSError as exc:  # a file the user named cannot be read or written
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or exc}")


def _fail(message: str) -> int:
    """Print one error line (newlines in ``message`` folded) and return exit status 2."""
    print(f"pairloss: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
