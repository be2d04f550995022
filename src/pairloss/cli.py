"""The ``pairloss`` command: ``train``, ``compare``, ``eval``, ``losses`` and ``bench``.

Every error that comes from the user's input (an unknown loss, a missing data set, a bad
option or flag value, a file that cannot be read or written) is printed as one line
``pairloss: error: ...`` with exit status 2, never a traceback. Settings are checked before
any data is loaded or any file is written.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, NoReturn

from .catalogue import LOSSES
from .errors import PairLossError


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


# (flag, config field, type, help) shared by ``train`` and ``compare``
_RUN_FLAGS: tuple[tuple[str, str, Any, str], ...] = (
    ("--dataset", "dataset", str, "fashion-mnist, att-faces, digits, folder or embeddings"),
    ("--data-dir", "data_dir", str, "data root (default: $PAIRLOSS_DATA or the data set's place)"),
    ("--labels", "labels", str, "label file for --dataset embeddings"),
    ("--miner", "miner", str, "miner name, e.g. multi_similarity or batch_hard"),
    ("--model", "model", str, "cnn28, face or mlp (default: the data set's)"),
    ("--embedding-size", "embedding_size", _integer, "embedding size (default 64)"),
    ("--epochs", "epochs", _integer, "epochs (default: the data set's budget)"),
    ("--batches-per-epoch", "batches_per_epoch", _integer, "P x K batches per epoch"),
    ("-P", "p", _integer, "classes per batch"),
    ("-K", "k", _integer, "samples per class in a batch"),
    ("--lr", "lr", _real, "AdamW learning rate (default 1e-3)"),
    ("--weight-decay", "weight_decay", _real, "AdamW weight decay (default 1e-4)"),
    ("--loss-lr-mult", "loss_lr_mult", _real, "learning-rate factor of the loss's parameters"),
    ("--warmup-epochs", "warmup_epochs", _real, "linear warm-up epochs (default 0.5)"),
    ("--grad-clip", "grad_clip", _real, "max gradient norm, 0 = off (default 5)"),
    ("--seed", "seed", _integer, "seed (default 0)"),
    (
        "--train-classes",
        "train_classes",
        _integer,
        "zero-shot: number of first classes to train on",
    ),
    ("--held-out", "held_out", _integer, "face protocol: identities held out for testing"),
    ("--eval-every", "eval_every", _integer, "evaluate every N epochs (default 1)"),
    ("--max-eval", "max_eval", _integer, "evaluate on a seeded subset of N test samples (0 = all)"),
    ("--threads", "threads", _integer, "torch CPU threads (default: torch's)"),
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

    flags = {field: getattr(args, field) for _, field, _, _ in _RUN_FLAGS}
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
    from .train.evaluate import headline
    from .train.run import check_run, train_run

    config = _config(args, loss=args.loss)
    check_run(config, resume=args.resume)
    result = train_run(config, progress=not args.quiet, resume=args.resume)
    print(f"final test metrics of the embedding ({result.seconds:.0f} s):")
    for key, value in result.metrics.items():
        print(f"  {key:>14}: {value:.4f}")
    print("all representations on the test split:")
    for name, values in result.baselines.items():
        print(f"  {name:>18}: {headline(values)}")
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


def _eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .train.run import evaluate_file, evaluate_run

    path = Path(args.path)
    if path.is_dir() or path.suffix == ".pt" and (path.parent / "config.json").is_file():
        for flag, value in (("--labels", args.labels), ("--protocol", args.protocol)):
            if value is not None:
                raise PairLossError(f"{flag}: applies to embedding files, not to the run {path}")
        result = evaluate_run(path, args.data_dir)
    elif path.is_file():
        if args.data_dir is not None:
            raise PairLossError(f"--data-dir: applies to run folders, not to the file {path}")
        result = evaluate_file(path, args.labels, args.protocol or "zero-shot")
    else:
        raise PairLossError(f"path: {path} does not exist; expected a run folder or a file")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {value:.4f}")
    return 0


def _add_run_flags(p: argparse.ArgumentParser, out_default: str) -> None:
    p.add_argument("--config", default=None, help="TOML file with settings (flags override)")
    for flag, field, kind, text in _RUN_FLAGS:
        p.add_argument(flag, dest=field, type=kind, default=None, help=text)
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
    p.add_argument("--quiet", action="store_true", help="no progress line")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pairloss`` command."""
    parser = OneLineParser(prog="pairloss", description="Pair-based losses.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("losses", help="list the losses with family, formula and paper")
    p.add_argument("--family", default=None, help="only losses whose family contains this")
    p.set_defaults(func=_losses)

    p = sub.add_parser("train", help="train an embedding model and write a report")
    p.add_argument("--loss", default=None, help="loss name (see `pairloss losses`)")
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

    p = sub.add_parser("eval", help="evaluate a run folder / checkpoint or an embedding file")
    p.add_argument("path", help="run folder, its checkpoint.pt, or a .npy/.pt embedding file")
    p.add_argument("--labels", default=None, help="label file for an embedding file")
    p.add_argument(
        "--protocol",
        default=None,
        choices=("zero-shot", "face"),
        help="for an embedding file (default zero-shot)",
    )
    p.add_argument("--data-dir", default=None, help="data root for a run folder")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_eval)

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
