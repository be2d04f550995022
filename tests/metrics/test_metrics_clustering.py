"""NMI / AMI: PML's AccuracyCalculator on the same clusters, hand-computed values, errors."""

from __future__ import annotations

import sys

import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from pairloss.errors import PairLossError
from pairloss.metrics import cluster_scores, clustering, kmeans_labels

from ._reference import LAYOUTS, clustered


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_pml_nmi_ami_on_the_same_clusters(layout, backend):
    x, labels = clustered(120, 6, layout, seed=2)
    ours = clustering(x, labels, backend=backend)
    seen = []

    def kmeans_func(embeddings, n_clusters):
        seen.append(n_clusters)
        return ours.cluster_labels

    calc = AccuracyCalculator(
        include=("NMI", "AMI"), kmeans_func=kmeans_func, device=torch.device("cpu")
    )
    pml = calc.get_accuracy(x, labels)
    assert seen == [ours.n_clusters] == [len(labels.unique())]
    assert ours.nmi == pytest.approx(pml["NMI"], abs=1e-12)
    assert ours.ami == pytest.approx(pml["AMI"], abs=1e-12)
    assert ours.backend == backend


def test_hand_computed_scores():
    labels = torch.tensor([0, 0, 1, 1])
    # a relabelled copy of the partition: NMI = AMI = 1
    assert cluster_scores(labels, torch.tensor([5, 5, 2, 2])) == pytest.approx((1.0, 1.0))
    # independent partition: MI = 0 so NMI = 0. Expected MI under the hypergeometric model:
    # each of the 4 cells has n_ij in {0, 1, 2} with probabilities 1/6, 4/6, 1/6 and
    # contributes (n_ij / 4) log(n_ij) -> 4 * (1/6) * (1/2) log 2 = log(2) / 3;
    # AMI = (0 - log2/3) / (log 2 - log2/3) = -1/2
    nmi, ami = cluster_scores(labels, torch.tensor([0, 1, 0, 1]))
    assert nmi == pytest.approx(0.0, abs=1e-12) and ami == pytest.approx(-0.5, abs=1e-12)


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_kmeans_is_seeded_and_recovers_separated_clusters(backend):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(90) % 3
    x = torch.eye(3, 5)[labels] * 20 + torch.randn(90, 5, generator=g)
    a = kmeans_labels(x, 3, backend=backend, seed=7)
    assert torch.equal(a, kmeans_labels(x, 3, backend=backend, seed=7))
    # one random start can merge two clusters; the best of 10 restarts recovers them
    assert clustering(x, labels, backend=backend, n_init=10).nmi == pytest.approx(1.0)
    assert clustering(x, labels, cluster_labels=labels).backend == "given"


def test_missing_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.metrics", None)
    with pytest.raises(PairLossError, match="scikit-learn.*pip install scikit-learn"):
        cluster_scores(torch.tensor([0, 1]), torch.tensor([0, 1]))


def test_bad_input_messages():
    x = torch.randn(6, 3)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(PairLossError, match="n_clusters: got 7"):
        kmeans_labels(x, 7)
    with pytest.raises(PairLossError, match="labels"):
        clustering(x, labels[:4])
    with pytest.raises(PairLossError, match="cluster_labels"):
        clustering(x, labels, cluster_labels=labels[:5])
    with pytest.raises(PairLossError, match="backend"):
        clustering(x, labels, backend="spectral")
    with pytest.raises(PairLossError, match="n_init"):
        kmeans_labels(x, 2, n_init=0)
    with pytest.raises(PairLossError, match="embeddings: contains NaN"):
        clustering(x.clone().fill_(float("nan")), labels)
    with pytest.raises(PairLossError, match="embeddings: the batch is empty"):
        kmeans_labels(x[:0], 1)
