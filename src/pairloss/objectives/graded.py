"""Objectives on graded pairs: P pairs (a_k, b_k) with a gold score y_k each (STS-style data).

The pair scores ``s_k = sim(a_k, b_k)`` form a list, not a matrix: the ranking objectives compare
every two pairs, ``O(P^2)`` pairs of pairs, which a sort reduces to ``O(P log P)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..similarity import normalize_rows


def ranked_pairs_logsumexp(
    scores: torch.Tensor, labels: torch.Tensor, scale: float
) -> torch.Tensor:
    r"""CoSENT's ranking term over every two pairs whose gold scores differ:

    .. math::
        \log\Big(1 + \sum_{(k, l):\, y_k < y_l} e^{\lambda (s_k - s_l)}\Big)

    (a pair ranked above a pair with a higher gold score is penalised). Exact in
    ``O(P log P)``: with the pairs sorted by gold score, the inner sum over the pairs with a
    higher gold score is a suffix log-sum-exp of ``-lambda s``. Ties (equal gold scores) give
    no term; no two different gold scores give 0.
    """
    z = scores * scale
    order = torch.argsort(labels, stable=True)
    y, z = labels[order], z[order]
    higher = torch.searchsorted(y.contiguous(), y.contiguous(), right=True)
    suffix = torch.flip(torch.logcumsumexp(torch.flip(-z, (0,)), dim=0), (0,))
    suffix = torch.cat([suffix, z.new_full((1,), float("-inf"))])
    terms = z + suffix[higher]
    return torch.logsumexp(torch.cat([z.new_zeros(1), terms]), dim=0)


def angle_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""AnglE's similarity of paired rows (Li & Li, ACL 2024): each vector, L2-normalised, is
    read as a complex vector whose real part is its first half and imaginary part its second
    half (an odd size is padded with a zero); the score is the absolute value of the summed
    real and imaginary parts of the quotient ``a / b``, which after normalisation is

    .. math::
        \Big|\cos(a, b) + \sum_k \big(a^{im}_k b^{re}_k - a^{re}_k b^{im}_k\big)\Big|

    (sentence-transformers' ``pairwise_angle_sim``). Shapes [P, D] -> [P].
    """
    if a.shape[1] % 2:
        a, b = F.pad(a, (0, 1)), F.pad(b, (0, 1))
    a, b = normalize_rows(a), normalize_rows(b)
    a_re, a_im = a.chunk(2, dim=1)
    b_re, b_im = b.chunk(2, dim=1)
    cosines = (a * b).sum(dim=1)
    sines = (a_im * b_re - a_re * b_im).sum(dim=1)
    return (cosines + sines).abs()
