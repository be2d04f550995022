"""Row objectives of the margin-type pair losses: contrastive, generalized lifted structure,
margin (Wu et al.) and binomial deviance.

Every function takes a block of scores ``s`` [b, N] in the similarity's own units and the
boolean masks ``pos`` / ``neg`` [b, N], and returns a list of :class:`RowTerms`. When
``is_distance`` is False the scores are similarities and every margin flips direction (a
positive pair should have a *high* score), as pytorch-metric-learning's ``distance.margin`` does.
"""

from __future__ import annotations

import torch

from .terms import RowTerms, masked_logsumexp


def _gap(x: torch.Tensor, y: torch.Tensor | float, is_distance: bool) -> torch.Tensor:
    """How far ``x`` lies beyond ``y`` in the "farther apart" direction: x - y for distances,
    y - x for similarities."""
    return x - y if is_distance else y - x


def _softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + e^x) without overflow, exact (no linear cut-off)."""
    return x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))


def contrastive_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    pos_margin: float,
    neg_margin: float,
    is_distance: bool = True,
) -> list[RowTerms]:
    """Two components, one term per pair.

    positive pairs: [d - pos_margin]+        (similarity: [pos_margin - s]+)
    negative pairs: [neg_margin - d]+        (similarity: [s - neg_margin]+)
    """
    # one elementwise pass: a cell is either positive or negative
    loss = torch.relu(
        torch.where(pos, _gap(s, pos_margin, is_distance), _gap(neg_margin, s, is_distance))
    )
    return [RowTerms.per_pair(loss, pos), RowTerms.per_pair(loss, neg)]


def generalized_lifted_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    pos_margin: float,
    neg_margin: float,
    is_distance: bool = True,
) -> list[RowTerms]:
    """One term per anchor:

        [ log sum_{p in P(i)} e^{d_ip - pos_margin} + log sum_{n in N(i)} e^{neg_margin - d_in} ]+

    (similarities: e^{pos_margin - s_ip} and e^{s_in - neg_margin}). An empty set contributes 0.
    """
    pos_lse = masked_logsumexp(_gap(s, pos_margin, is_distance), pos)
    neg_lse = masked_logsumexp(_gap(neg_margin, s, is_distance), neg)
    valid = pos.any(dim=1) | neg.any(dim=1)
    return [RowTerms.per_anchor(torch.relu(pos_lse + neg_lse), valid)]


def margin_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    margin: float,
    beta: torch.Tensor,
    nu: float = 0.0,
    per_class_reg: bool = False,
    global_reg: bool = False,
    is_distance: bool = True,
) -> list[RowTerms]:
    """Margin loss (Wu et al. 2017) over all triplets (i, p, n) of each row, in O(b x N).

    With l+_ip = [d_ip - beta_i + margin]+ and l-_in = [beta_i - d_in + margin]+ (similarities:
    [beta_i - s_ip + margin]+ and [s_in - beta_i + margin]+), the triplets of row i sum to

        N_i sum_p l+_ip + P_i sum_n l-_in,

    where P_i, N_i are the row's numbers of positives and negatives: each pair term is repeated
    once per partner of the other kind. The non-zero count is N_i #{l+ > 0} + P_i #{l- > 0}
    (pytorch-metric-learning's divisor), and the number of triplets is P_i N_i.

    ``beta`` is a scalar or a [b] tensor (per-anchor values, e.g. beta of the anchor's class).
    ``per_class_reg`` adds nu * beta_i once per triplet to the same component (its divisor is
    the non-zero count). ``global_reg`` adds a second component nu * beta counted once per
    triplet with one "non-zero term" per triplet, which reduces to nu * beta when any triplet
    exists and to 0 otherwise.
    """
    beta = beta.to(s.dtype)
    b_col = beta.reshape(-1, 1) if beta.dim() > 0 else beta
    pos_loss = torch.relu(_gap(s, b_col, is_distance) + margin)
    neg_loss = torch.relu(_gap(b_col, s, is_distance) + margin)
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    pos_loss = torch.where(pos, pos_loss, zero)
    neg_loss = torch.where(neg, neg_loss, zero)
    n_pos = pos.sum(dim=1).to(s.dtype)
    n_neg = neg.sum(dim=1).to(s.dtype)
    n_triplets = n_pos * n_neg
    values = n_neg * pos_loss.sum(dim=1) + n_pos * neg_loss.sum(dim=1)
    nonzero = n_neg * (pos_loss > 0).sum(dim=1).to(s.dtype)
    nonzero = nonzero + n_pos * (neg_loss > 0).sum(dim=1).to(s.dtype)
    if per_class_reg:
        values = values + nu * beta.expand(s.shape[0]) * n_triplets
    out = [RowTerms(values, n_triplets, nonzero)]
    if global_reg:
        out.append(RowTerms(nu * beta * n_triplets, n_triplets, n_triplets))
    return out


def binomial_deviance_rows(
    s: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    alpha: float,
    beta: float,
    base: float,
    is_distance: bool = False,
) -> list[RowTerms]:
    """Two components, one term per pair:

        positive pairs: log(1 + e^{-alpha (s - base)})
        negative pairs: log(1 + e^{ beta (s - base)})

    For a distance d the signs flip (s - base is replaced by base - d). Computed in an overflow-
    free softplus form.
    """
    x = _gap(base, s, is_distance)  # s - base, or base - d
    loss = _softplus(torch.where(pos, -alpha * x, beta * x))  # one softplus per cell
    return [RowTerms.per_pair(loss, pos), RowTerms.per_pair(loss, neg)]
