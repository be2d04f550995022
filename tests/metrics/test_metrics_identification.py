"""Closed-set CMC and open-set DIR@FAR against hand-computed cases and brute force."""

from __future__ import annotations

import math

import pytest
import torch

from pairloss.errors import PairLossError
from pairloss.metrics import cmc, dir_at_far

from ._reference import exact_scores


def test_cmc_hand_computed_with_deduplicated_identities():
    # dot scores with probe [1]: samples ranked 0 1 2 3 4 with identities 10 20 10 30 20,
    # so identities rank 10, 20, 30 (30 is 4th sample but 3rd identity)
    gallery = torch.tensor([[5.0], [4.0], [3.0], [2.0], [1.0]])
    gallery_labels = torch.tensor([10, 20, 10, 30, 20])
    probe = torch.ones(4, 1)
    probe_labels = torch.tensor([10, 20, 30, 40])  # 40 is not enrolled
    r = cmc(probe, probe_labels, gallery, gallery_labels, ranks=(1, 2, 3), metric="dot")
    assert r.rates == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 1.0}, abs=1e-15)
    assert r.curve.tolist() == pytest.approx([1 / 3, 2 / 3, 1.0], abs=1e-15)
    assert r.n_excluded == 1 and r.excluded == {"identity_not_enrolled": 1}


def test_cmc_identity_ties_follow_first_sample_index():
    # identities 7 and 3 both score 1 (samples 0 and 1); 7's sample comes first -> 3 is rank 2
    gallery = torch.tensor([[1.0], [1.0], [0.0]])
    r = cmc(
        torch.ones(1, 1),
        torch.tensor([3]),
        gallery,
        torch.tensor([7, 3, 5]),
        ranks=(1, 2),
        metric="dot",
    )
    assert r.rates == {1: 0.0, 2: 1.0}


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_cmc_brute_force(metric):
    g = torch.Generator().manual_seed(0)
    gallery_labels = torch.randint(0, 25, (120,), generator=g)
    gallery = torch.randn(120, 6, generator=g, dtype=torch.float64)
    probe_labels = torch.randint(0, 30, (50,), generator=g)
    probe = torch.randn(50, 6, generator=g, dtype=torch.float64)
    scores = exact_scores(probe, gallery, metric).tolist()
    ids = sorted(set(gallery_labels.tolist()))
    ranks = []
    for row, label in zip(scores, probe_labels.tolist(), strict=True):
        if label not in ids:
            continue
        best = {}
        for j, (s, c) in enumerate(zip(row, gallery_labels.tolist(), strict=True)):
            if c not in best or s > best[c][0]:
                best[c] = (s, j)
        order = sorted(best, key=lambda c: (-best[c][0], best[c][1]))
        ranks.append(order.index(label) + 1)
    r = cmc(
        probe, probe_labels, gallery, gallery_labels, ranks=(1, 3, 10), metric=metric, chunk_size=7
    )
    for k in (1, 3, 10):
        assert r.rates[k] == pytest.approx(sum(x <= k for x in ranks) / len(ranks), abs=1e-15)
    assert r.n_excluded == 50 - len(ranks)


def _dir_case():
    # dot scores probe * [3, 2, 1] for identities 1, 2, 3
    gallery = torch.tensor([[3.0], [2.0], [1.0]])
    gallery_labels = torch.tensor([1, 2, 3])
    # known: p1 (label 1, own 3, rank 1), p2 (label 1, own 1.5, rank 1), p3 (label 2, own 2,
    # rank 2); unknown (label 9) top scores 0.6 1.2 1.8 2.4 3.0
    probe = torch.tensor([[1.0], [0.5], [1.0], [0.2], [0.4], [0.6], [0.8], [1.0]])
    probe_labels = torch.tensor([1, 1, 2, 9, 9, 9, 9, 9])
    return probe, probe_labels, gallery, gallery_labels


def test_dir_at_far_hand_computed():
    r = dir_at_far(*_dir_case(), far=(0.2, 0.6, 0.1), metric="dot")
    # far 0.2: m = 1, threshold = 2nd highest unknown score 2.4; only p1 (3 > 2.4) -> 1/3
    assert r.thresholds[0.2] == pytest.approx(2.4, abs=1e-6) and r.dir[0.2] == pytest.approx(1 / 3)
    # far 0.6: m = 3, threshold 1.2; p1 and p2 (1.5) pass, p3 is rank 2 -> 2/3
    assert r.thresholds[0.6] == pytest.approx(1.2, abs=1e-6) and r.dir[0.6] == pytest.approx(2 / 3)
    # far 0.1 needs 10 unknown probes
    assert r.dir[0.1] is None and "needs at least 10 unknown probes, got 5" in r.notes[0]
    assert (r.n_known, r.n_unknown, r.rank) == (3, 5, 1)
    # rank <= 2 admits p3 (own score 2 > 1.2) at far 0.6 -> 1
    assert dir_at_far(*_dir_case(), far=0.6, rank=2, metric="dot").dir[0.6] == 1.0


def test_dir_at_far_brute_force():
    g = torch.Generator().manual_seed(1)
    gallery_labels = torch.arange(40).repeat(2)
    gallery = torch.randn(80, 5, generator=g, dtype=torch.float64)
    probe_labels = torch.randint(0, 80, (300,), generator=g)
    probe = gallery[probe_labels.clamp(max=79) % 40] + torch.randn(
        300, 5, generator=g, dtype=torch.float64
    )
    scores = exact_scores(probe, gallery, "cosine")
    known = probe_labels < 40
    top = scores.max(dim=1).values
    own = torch.stack(
        [
            scores[i, gallery_labels == c].max() if c < 40 else top[i]
            for i, c in enumerate(probe_labels.tolist())
        ]
    )
    is_top = (own >= top) & known
    r = dir_at_far(probe, probe_labels, gallery, gallery_labels, far=(0.01, 0.1, 0.5))
    unknown_top = top[~known]
    for far, rate in r.dir.items():
        t = r.thresholds[far]
        # at most far of the unknown probes exceed t, and t is the smallest such unknown score
        assert (unknown_top > t).double().mean() <= far
        assert ((unknown_top >= t).double().mean() > far) or t == -math.inf
        assert rate == pytest.approx(
            float((is_top[known] & (own[known] > t)).double().mean()), abs=1e-15
        )


def test_bad_input_messages():
    probe, probe_labels, gallery, gallery_labels = _dir_case()
    with pytest.raises(PairLossError, match="ranks: 4 exceeds the 3 gallery identities"):
        cmc(probe, probe_labels, gallery, gallery_labels, ranks=4)
    with pytest.raises(PairLossError, match="probe_labels"):
        cmc(probe, probe_labels[:3], gallery, gallery_labels)
    with pytest.raises(PairLossError, match="gallery_labels"):
        cmc(probe, probe_labels, gallery, gallery_labels[:2])
    with pytest.raises(PairLossError, match="gallery: has 2 features"):
        cmc(probe, probe_labels, torch.ones(3, 2), gallery_labels)
    with pytest.raises(PairLossError, match="gallery: missing"):
        cmc(probe, probe_labels, None, gallery_labels)
    with pytest.raises(PairLossError, match="probe: contains NaN"):
        cmc(probe.clone().fill_(math.nan), probe_labels, gallery, gallery_labels)
    with pytest.raises(PairLossError, match="probe_labels: 3 probes are enrolled and 0"):
        dir_at_far(probe[:3], probe_labels[:3], gallery, gallery_labels, metric="dot")
    with pytest.raises(PairLossError, match="far"):
        dir_at_far(probe, probe_labels, gallery, gallery_labels, far=0)
    with pytest.raises(PairLossError, match="rank"):
        dir_at_far(probe, probe_labels, gallery, gallery_labels, rank=0)
