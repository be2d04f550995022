"""Verification metrics from pair scores: ROC, AUC, EER, TAR@FAR, LFW accuracy and minDCF.

A pair is *genuine* (``is_same`` True) or *impostor*; a larger score means "more likely the same".
At a threshold ``t`` a pair is accepted when ``score >= t``; then

* ``TPR(t)`` (= TAR) is the accepted fraction of genuine pairs, ``FNR = 1 - TPR`` (= P_miss);
* ``FPR(t)`` (= FAR = P_fa) is the accepted fraction of impostor pairs.

The ROC has one point per distinct score (plus ``t = +inf``: nothing accepted), exactly the
points of scikit-learn's ``roc_curve(..., drop_intermediate=False)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import PairLossError
from ..validation import check_embeddings, check_positive, check_tensor
from ._checks import check_open_unit, check_rates
from ._format import format_table
from .neighbors import check_metric, common_scale, prepare

DEFAULT_FAR = (1e-1, 1e-2, 1e-3, 1e-4)
PAIR_SCORE_BYTES = 2**28
"""Memory of one chunk of :func:`pair_scores` (two float64 ``[chunk, D]`` row gathers)."""


@dataclass(frozen=True)
class RocCurve:
    """ROC points in order of decreasing threshold.

    Attributes:
        fpr: ``[T]`` false positive rates, from 0 up to 1.
        tpr: ``[T]`` true positive rates, from 0 up to 1.
        thresholds: ``[T]`` the thresholds (``+inf`` first, then each distinct score, descending).
    """

    fpr: torch.Tensor
    tpr: torch.Tensor
    thresholds: torch.Tensor


@dataclass(frozen=True)
class VerificationResult:
    """Verification metrics (see :func:`verification` for the definitions).

    Attributes:
        roc: the :class:`RocCurve`.
        auc: area under the ROC curve.
        eer: equal error rate; ``eer_threshold`` the threshold of the first ROC point at or past
            the crossing.
        tar_at_far: ``{far: TAR}``; None where there are fewer than ``ceil(1/far)`` impostors.
        accuracy, accuracy_std: mean and (population) std of the cross-validated fold accuracies.
        fold_thresholds: the threshold chosen for each fold (+inf, accepting no pair, where
            rejecting every pair is best on that fold).
        min_dcf, min_dcf_threshold: the normalised minimum detection cost and its threshold.
        dcf_p_target, dcf_c_miss, dcf_c_fa: the cost parameters used.
        n_genuine, n_impostor: pair counts.
        notes: human-readable remarks (e.g. why a TAR@FAR is None).
    """

    roc: RocCurve
    auc: float
    eer: float
    eer_threshold: float
    tar_at_far: dict[float, float | None]
    accuracy: float
    accuracy_std: float
    fold_thresholds: tuple[float, ...]
    min_dcf: float
    min_dcf_threshold: float
    dcf_p_target: float
    dcf_c_miss: float
    dcf_c_fa: float
    n_genuine: int
    n_impostor: int
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, float | int | None | list[str]]:
        """Scalar metrics keyed ``auc``, ``eer``, ``tar@far=0.001``, ``accuracy``, ``min_dcf``..."""
        out: dict[str, float | int | None | list[str]] = {
            "auc": self.auc,
            "eer": self.eer,
            "eer_threshold": self.eer_threshold,
        }
        out.update({f"tar@far={far:g}": tar for far, tar in self.tar_at_far.items()})
        out.update(
            accuracy=self.accuracy,
            accuracy_std=self.accuracy_std,
            min_dcf=self.min_dcf,
            min_dcf_threshold=self.min_dcf_threshold,
            n_genuine=self.n_genuine,
            n_impostor=self.n_impostor,
        )
        out["notes"] = list(self.notes)
        return out

    def table(self) -> str:
        """A readable table of the scalar metrics, followed by the notes."""
        rows = [(k, v) for k, v in self.to_dict().items() if k != "notes"]
        title = (
            f"verification: {self.n_genuine} genuine / {self.n_impostor} impostor pairs, "
            f"minDCF with p_target={self.dcf_p_target:g}, c_miss={self.dcf_c_miss:g}, "
            f"c_fa={self.dcf_c_fa:g}"
        )
        return "\n".join([format_table(title, rows), *(f"note: {n}" for n in self.notes)])

    def __str__(self) -> str:
        return self.table()


def roc_curve(scores: torch.Tensor, is_same: torch.Tensor) -> RocCurve:
    """The ROC curve of ``scores [P]`` against ``is_same [P]`` (bool or 0/1).

    One point per distinct score, thresholds descending, plus a first point at ``+inf``
    (nothing accepted); ties are accepted together. Equals scikit-learn's
    ``roc_curve(is_same, scores, drop_intermediate=False)``.
    """
    scores, is_same = _check_scores(scores, is_same)
    thresholds, tps, fps = _roc_counts(scores, is_same)
    return RocCurve(fpr=fps / fps[-1], tpr=tps / tps[-1], thresholds=thresholds)


def roc_auc(scores: torch.Tensor, is_same: torch.Tensor) -> float:
    """Area under the ROC curve (trapezoidal rule over :func:`roc_curve`).

    Equals the Mann-Whitney probability ``P(s+ > s-) + 0.5 P(s+ = s-)``.
    """
    return _trapezoid(roc_curve(scores, is_same))


def verification(
    scores: torch.Tensor,
    is_same: torch.Tensor,
    far: Sequence[float] = DEFAULT_FAR,
    n_folds: int = 10,
    dcf_p_target: float = 0.01,
    dcf_c_miss: float = 1.0,
    dcf_c_fa: float = 1.0,
) -> VerificationResult:
    """ROC, AUC, EER, TAR@FAR, cross-validated accuracy and minDCF of scored pairs.

    Definitions (``t`` a threshold, pairs with ``score >= t`` accepted):

    * AUC: trapezoidal area under the ROC (:func:`roc_curve`).
    * EER: the rate where FNR and FPR cross, linearly interpolated between the two ROC points
      around the crossing.
    * TAR@FAR: the largest TPR among ROC points with ``FPR <= far``; None (with a note) when
      there are fewer than ``ceil(1/far)`` impostor pairs, since such a FAR cannot be resolved.
    * Accuracy (LFW protocol, Huang et al. 2007): the pair list is split into ``n_folds``
      contiguous folds (sizes as ``numpy.array_split``); for each fold the threshold maximising
      accuracy on the other folds (candidates: every distinct training score and ``+inf``; ties
      to the highest threshold) is applied to the held-out fold. Mean and population std
      (ddof=0) of the fold accuracies.
    * minDCF (NIST SRE): ``min_t [C_miss P_miss(t) p + C_fa P_fa(t) (1 - p)] /
      min(C_miss p, C_fa (1 - p))`` over the ROC thresholds, with ``p = dcf_p_target``.

    Args:
        scores: ``[P]`` real scores, larger = more likely the same.
        is_same: ``[P]`` bool (or 0/1) flags; at least one genuine and one impostor pair.
        far: target false accept rates in (0, 1) (default ``(1e-1, 1e-2, 1e-3, 1e-4)``).
        n_folds: folds for the accuracy (default 10), ``2 <= n_folds <= P``.
        dcf_p_target: prior of a genuine pair for the DCF (default 0.01).
        dcf_c_miss, dcf_c_fa: costs of a miss and of a false accept (default 1 and 1).
    """
    scores, is_same = _check_scores(scores, is_same)
    fars = check_rates(far, "far")
    n_folds = _check_folds(n_folds, scores.numel())
    p_target = check_open_unit(dcf_p_target, "dcf_p_target")
    c_miss = check_positive(dcf_c_miss, "dcf_c_miss")
    c_fa = check_positive(dcf_c_fa, "dcf_c_fa")
    thresholds, tps, fps = _roc_counts(scores, is_same)
    roc = RocCurve(fpr=fps / fps[-1], tpr=tps / tps[-1], thresholds=thresholds)
    n_genuine, n_impostor = int(is_same.sum()), int((~is_same).sum())
    eer, eer_threshold = _eer(thresholds, tps, fps)
    tar, notes = _tar_at_far(roc, fars, n_impostor)
    fold_acc, fold_thresholds = _cross_validated_accuracy(scores, is_same, n_folds)
    min_dcf, dcf_threshold = _min_dcf(roc, p_target, c_miss, c_fa)
    return VerificationResult(
        roc=roc,
        auc=_trapezoid(roc),
        eer=eer,
        eer_threshold=eer_threshold,
        tar_at_far=tar,
        accuracy=float(fold_acc.mean()),
        accuracy_std=float(fold_acc.std(unbiased=False)),
        fold_thresholds=fold_thresholds,
        min_dcf=min_dcf,
        min_dcf_threshold=dcf_threshold,
        dcf_p_target=p_target,
        dcf_c_miss=c_miss,
        dcf_c_fa=c_fa,
        n_genuine=n_genuine,
        n_impostor=n_impostor,
        notes=notes,
    )


def pair_scores(
    emb_a: torch.Tensor,
    emb_b: torch.Tensor | None = None,
    metric: str = "cosine",
    pairs: torch.Tensor | None = None,
    max_bytes: int = PAIR_SCORE_BYTES,
) -> torch.Tensor:
    """float64 scores of row pairs: cosine similarity, dot product or ``-||a - b||``.

    Args:
        emb_a: ``[P, D]`` embeddings, or ``[N, D]`` embeddings when ``pairs`` is given.
        emb_b: ``[P, D]`` embeddings (pair ``i`` is ``(emb_a[i], emb_b[i])``); None with ``pairs``.
        metric: ``"cosine"`` (default), ``"dot"`` or ``"euclidean"`` (the negated distance).
        pairs: optional ``[P, 2]`` integer row indices into ``emb_a``.
        max_bytes: memory of one chunk of pairs (default 256 MiB): a chunk holds
            ``max(1, max_bytes // (16 D))`` pairs, whatever the dimension D.

    Returns:
        ``[P]`` float64 scores on the CPU.
    """
    return _pair_scores(emb_a, emb_b, metric, pairs, "pairs", max_bytes)


def _pair_scores(
    emb_a, emb_b, metric, pairs, pairs_name: str, max_bytes: int = PAIR_SCORE_BYTES
) -> torch.Tensor:
    """:func:`pair_scores`, naming the index pairs ``pairs_name`` in errors."""
    metric = check_metric(metric)
    if pairs is None:
        a = check_embeddings(emb_a, "emb_a")
        b = check_embeddings(emb_b, "emb_b")
        if b.shape != a.shape:
            raise PairLossError(
                f"emb_b: has shape {tuple(b.shape)} but emb_a has {tuple(a.shape)}; "
                "expected one row per pair in both"
            )
        left = right = torch.arange(a.shape[0])
        scale = 1.0 if metric == "cosine" else common_scale(a, b)
        a, b = prepare(a, metric, "emb_a", scale), prepare(b, metric, "emb_b", scale)
    else:
        a = check_embeddings(emb_a, "embeddings")
        scale = 1.0 if metric == "cosine" else common_scale(a)
        a = b = prepare(a, metric, "embeddings", scale)
        left, right = _check_pairs(check_tensor(pairs, pairs_name), a.shape[0], pairs_name)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise PairLossError(f"max_bytes: expected a positive int, got {max_bytes!r}")
    chunk = max(1, max_bytes // (16 * a.shape[1]))
    parts = []
    for i, j in zip(left.split(chunk), right.split(chunk), strict=True):
        x, y = a[i.to(a.device)].to(torch.float64), b[j.to(b.device)].to(torch.float64)
        parts.append(-(x - y).norm(dim=1) if metric == "euclidean" else (x * y).sum(dim=1))
    scores = torch.cat(parts).cpu()
    # the embeddings were divided by ``scale``: distances scale with it, dot products twice
    return scores * (scale if metric == "euclidean" else scale * scale)


def verification_from_pairs(
    emb_a: torch.Tensor,
    emb_b: torch.Tensor,
    is_same: torch.Tensor,
    metric: str = "cosine",
    far: Sequence[float] = DEFAULT_FAR,
    n_folds: int = 10,
    dcf_p_target: float = 0.01,
    dcf_c_miss: float = 1.0,
    dcf_c_fa: float = 1.0,
) -> VerificationResult:
    """:func:`verification` of embedding pairs.

    Two call forms:

    * ``verification_from_pairs(emb_a [P, D], emb_b [P, D], is_same [P])``: pair ``i`` is
      ``(emb_a[i], emb_b[i])``;
    * ``verification_from_pairs(embeddings [N, D], pairs [P, 2], is_same [P])``: an integer
      second argument is read as row-index pairs into the first.

    Scores are the cosine similarity (default), the dot product or the negated Euclidean
    distance (``metric="euclidean"``), in float64 (see :func:`pair_scores`). The remaining
    arguments are those of :func:`verification`.
    """
    emb_b = check_tensor(emb_b, "emb_b")
    if emb_b.is_floating_point():
        scores = _pair_scores(emb_a, emb_b, metric, None, "pairs")
    else:
        scores = _pair_scores(emb_a, None, metric, emb_b, "emb_b (read as index pairs)")
    return verification(scores, is_same, far, n_folds, dcf_p_target, dcf_c_miss, dcf_c_fa)


def _roc_counts(
    scores: torch.Tensor, is_same: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thresholds (``+inf``, then distinct scores desc) and the cumulative TP / FP counts."""
    order = scores.argsort(descending=True, stable=True)
    s, y = scores[order], is_same[order].to(torch.float64)
    last_of_value = torch.ones_like(s, dtype=torch.bool)
    last_of_value[:-1] = s[1:] != s[:-1]
    tps = y.cumsum(0)[last_of_value]
    fps = (1 - y).cumsum(0)[last_of_value]
    zero = torch.zeros(1, dtype=torch.float64)
    thresholds = torch.cat([torch.full((1,), torch.inf, dtype=torch.float64), s[last_of_value]])
    return thresholds, torch.cat([zero, tps]), torch.cat([zero, fps])


def _trapezoid(roc: RocCurve) -> float:
    return float(torch.trapezoid(roc.tpr, roc.fpr))


def _eer(thresholds: torch.Tensor, tps: torch.Tensor, fps: torch.Tensor) -> tuple[float, float]:
    """EER from the ROC counts; the sign of ``FNR - FPR`` is taken from exact integer counts."""
    n_pos, n_neg = tps[-1], fps[-1]
    gap = (n_pos - tps) * n_neg - fps * n_pos  # (FNR - FPR) * n_pos * n_neg, exact
    i = int((gap <= 0).nonzero()[0])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    fpr = fps / n_neg
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1])), float(thresholds[i])


def _tar_at_far(
    roc: RocCurve, fars: tuple[float, ...], n_impostor: int
) -> tuple[dict[float, float | None], tuple[str, ...]]:
    tar: dict[float, float | None] = {}
    notes = []
    for far in fars:
        needed = math.ceil(1 / far - 1e-9)
        if n_impostor < needed:
            tar[far] = None
            notes.append(
                f"tar@far={far:g}: needs at least 1/FAR = {needed} impostor pairs, got {n_impostor}"
            )
        else:
            tar[far] = float(roc.tpr[roc.fpr <= far].max())
    return tar, tuple(notes)


def _cross_validated_accuracy(
    scores: torch.Tensor, is_same: torch.Tensor, n_folds: int
) -> tuple[torch.Tensor, tuple[float, ...]]:
    sizes = [len(part) for part in torch.arange(scores.numel()).tensor_split(n_folds)]
    fold = torch.repeat_interleave(torch.arange(n_folds), torch.tensor(sizes))
    accuracies, thresholds = [], []
    for f in range(n_folds):
        train, test = fold != f, fold == f
        threshold = _best_threshold(scores[train], is_same[train])
        accepted = scores[test] >= threshold
        accuracies.append(float((accepted == is_same[test]).to(torch.float64).mean()))
        thresholds.append(threshold)
    return torch.tensor(accuracies, dtype=torch.float64), tuple(thresholds)


def _best_threshold(scores: torch.Tensor, is_same: torch.Tensor) -> float:
    """The threshold (``+inf`` or a distinct score) of highest accuracy; ties to the highest."""
    thresholds, tps, fps = _roc_counts(scores, is_same)
    n_impostor = float((~is_same).sum())
    correct = tps + (n_impostor - fps)
    return float(thresholds[int(correct.argmax())])


def _min_dcf(roc: RocCurve, p_target: float, c_miss: float, c_fa: float) -> tuple[float, float]:
    cost = c_miss * (1 - roc.tpr) * p_target + c_fa * roc.fpr * (1 - p_target)
    cost = cost / min(c_miss * p_target, c_fa * (1 - p_target))
    i = int(cost.argmin())
    return float(cost[i]), float(roc.thresholds[i])


def _check_scores(scores: object, is_same: object) -> tuple[torch.Tensor, torch.Tensor]:
    scores = check_tensor(scores, "scores")
    if scores.dim() != 1 or not scores.is_floating_point():
        raise PairLossError(
            f"scores: expected a 1-D floating-point tensor, got shape {tuple(scores.shape)} "
            f"and dtype {scores.dtype}"
        )
    if scores.numel() and not bool(torch.isfinite(scores).all()):
        bad = (~torch.isfinite(scores)).nonzero().flatten()[:5].tolist()
        raise PairLossError(
            f"scores: contains NaN or Inf at position(s) {bad}; expected finite scores"
        )
    is_same = check_tensor(is_same, "is_same")
    if tuple(is_same.shape) != tuple(scores.shape):
        raise PairLossError(
            f"is_same: has shape {tuple(is_same.shape)} but scores has {tuple(scores.shape)}; "
            "expected one flag per pair"
        )
    if is_same.dtype != torch.bool:
        if not bool(((is_same == 0) | (is_same == 1)).all()):
            raise PairLossError("is_same: expected bool or 0/1 values")
        is_same = is_same != 0
    n_genuine = int(is_same.sum())
    if n_genuine == 0 or n_genuine == is_same.numel():
        raise PairLossError(
            f"is_same: has {n_genuine} genuine and {is_same.numel() - n_genuine} impostor pairs; "
            "expected at least one of each"
        )
    return scores.detach().cpu().to(torch.float64), is_same.cpu()


def _check_folds(n_folds: object, n_pairs: int) -> int:
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or not 2 <= n_folds <= n_pairs:
        raise PairLossError(
            f"n_folds: got {n_folds!r}; expected an int with 2 <= n_folds <= {n_pairs} (pairs)"
        )
    return n_folds


def _check_pairs(
    pairs: torch.Tensor, n: int, name: str = "pairs"
) -> tuple[torch.Tensor, torch.Tensor]:
    if pairs.dim() != 2 or pairs.shape[1] != 2 or pairs.shape[0] == 0:
        raise PairLossError(
            f"{name}: expected a non-empty [P, 2] integer tensor, got shape {tuple(pairs.shape)}"
        )
    if pairs.dtype == torch.bool or pairs.is_complex():
        raise PairLossError(f"{name}: expected integer row indices, got dtype {pairs.dtype}")
    if int(pairs.min()) < 0 or int(pairs.max()) >= n:
        raise PairLossError(
            f"{name}: indices must lie in [0, {n}), got range [{int(pairs.min())}, "
            f"{int(pairs.max())}]"
        )
    pairs = pairs.long().cpu()
    return pairs[:, 0], pairs[:, 1]
