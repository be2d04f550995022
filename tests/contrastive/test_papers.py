"""Catalogue D losses without an installable peer, checked against their papers' formulas, the
authors' code reproduced here in float64, and identities: CWCL with identity weights is CLIP,
Soft-InfoNCE with unit weights is InfoNCE, I-Con with the SimCLR neighbourhood is NT-Xent (and
with SupCon's is SupCon less an entropy, with SNE's is SNE)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml

from pairloss.errors import PairLossError
from pairloss.losses.contrastive.amcl import AMCLLoss, temperature_regulariser
from pairloss.losses.contrastive.cacr import CACRLoss
from pairloss.losses.contrastive.clip import clip
from pairloss.losses.contrastive.groco import GroCoLoss
from pairloss.losses.contrastive.icon import IConLoss, gaussian_neighbourhood
from pairloss.losses.contrastive.in_batch import InBatchNegativesLoss
from pairloss.losses.contrastive.isogclr import ISogCLRLoss
from pairloss.losses.contrastive.multiview import MultiViewInfoNCELoss, MVDHELLoss
from pairloss.losses.contrastive.ntxent_am import NTXentAMLoss
from pairloss.losses.contrastive.weighted import (
    CWCLLoss,
    SoftInfoNCELoss,
    cwcl,
    soft_infonce_weights,
)
from pairloss.similarity import LpDistance

ENGINES = [("dense", None), ("blocked", 3)]


def randn(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()


def value_and_grads(fn, inputs):
    out = fn()
    grads = torch.autograd.grad(out, inputs, allow_unused=True)
    return [out.detach()] + [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]


def same(fn_a, fn_b, inputs, rtol=1e-9, atol=1e-12):
    for u, v in zip(value_and_grads(fn_a, inputs), value_and_grads(fn_b, inputs), strict=True):
        torch.testing.assert_close(u, v, rtol=rtol, atol=atol)


@pytest.mark.parametrize("engine, block", ENGINES)
def test_cwcl_with_identity_weights_is_clip(engine, block):
    u, v = randn(9, 5, seed=1), randn(9, 5, seed=2)
    eye = torch.eye(9, dtype=torch.float64)
    scale = math.exp(math.log(1 / 0.07))
    same(
        lambda: cwcl(u, v, eye, logit_scale=scale, engine=engine, block_size=block),
        lambda: clip(u, v, scale),
        [u, v],
    )
    # the soft weights: the definition, written out
    loss = CWCLLoss(engine=engine, block_size=block).double()

    def reference():
        un, vn = F.normalize(u, dim=1), F.normalize(v, dim=1)
        w = (1 + un.detach() @ un.detach().T) / 2
        z = loss.scale() * un @ vn.T
        rows = -(w * z.log_softmax(1)).sum(1) / w.sum(1)
        cols = -(w * z.log_softmax(0)).sum(0) / w.sum(0)
        return (rows.mean() + cols.mean()) / 2

    same(lambda: loss(u, v), reference, [u, v, loss.logit_scale])


@pytest.mark.parametrize("engine, block", ENGINES)
def test_soft_infonce_unit_weights_is_infonce_and_weights_enter_the_denominator(engine, block):
    q, d = randn(8, 5, seed=3), randn(16, 5, seed=4)
    loss = SoftInfoNCELoss(engine=engine, block_size=block)
    same(
        lambda: loss(q, d, torch.ones(8, 16, dtype=torch.float64)),
        lambda: InBatchNegativesLoss()(q, d),
        [q, d],
    )
    w = soft_infonce_weights(randn(8, 16, seed=5).detach(), alpha=1.0, beta=2.0, temperature=0.5)

    def reference():
        z = 20.0 * F.normalize(q, dim=1) @ F.normalize(d, dim=1).T
        pos = z.diagonal()
        weighted = (w * z.exp()).sum(1) - w.diagonal() * pos.exp() + pos.exp()
        return (weighted.log() - pos).mean()

    same(lambda: loss(q, d, w), reference, [q, d])
    assert float(w.min()) >= 0.1 and torch.equal(w.diagonal(), torch.ones(8, dtype=torch.float64))
    with pytest.raises(PairLossError, match="weights"):
        loss(q, d, -torch.ones(8, 16, dtype=torch.float64))


@pytest.mark.parametrize("engine, block", ENGINES)
def test_icon_special_cases(engine, block):
    x = randn(12, 5, seed=6)
    views = torch.arange(6).repeat(2)
    icon = IConLoss(temperature=0.5, engine=engine, block_size=block)
    same(lambda: icon(x, views), lambda: pml.NTXentLoss(temperature=0.5)(x, views), [x])
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3])
    ce = IConLoss(temperature=0.1, form="cross_entropy", engine=engine, block_size=block)
    same(lambda: ce(x, labels), lambda: pml.SupConLoss(temperature=0.1)(x, labels), [x])
    kl = IConLoss(temperature=0.1, engine=engine, block_size=block)
    entropy = torch.tensor([2, 2, 2, 3, 3, 3, 3, 1, 1, 2, 2, 2], dtype=torch.float64).log().mean()
    same(lambda: kl(x, labels) + entropy, lambda: ce(x, labels), [x])
    # SNE (Hinton & Roweis 2002): Gaussian neighbourhoods of the inputs and of the embedding
    inputs = randn(12, 7, seed=7).detach()
    sigma = torch.linspace(0.5, 2.0, 12, dtype=torch.float64)
    sne = IConLoss(
        temperature=1.0,
        distance=LpDistance(power=2, normalize_embeddings=False),
        engine=engine,
        block_size=block,
    )

    def reference():
        off = ~torch.eye(12, dtype=torch.bool)
        p = (
            (-(torch.cdist(inputs, inputs) ** 2) / (2 * sigma[:, None] ** 2))
            .masked_fill(~off, -math.inf)
            .softmax(1)
        )
        log_q = (-(torch.cdist(x, x) ** 2)).masked_fill(~off, -math.inf).log_softmax(1)
        return (p[off] * (p[off].log() - log_q[off])).sum() / 12

    same(lambda: sne(x, target=gaussian_neighbourhood(inputs, sigma)), reference, [x])


def test_ntxent_am():
    x = randn(12, 5, seed=8)
    views = torch.arange(6).repeat(2)
    same(
        lambda: NTXentAMLoss(margin=0.0, temperature=0.2)(x, views),
        lambda: pml.NTXentLoss(temperature=0.2)(x, views),
        [x],
    )
    for angular in (False, True):

        def reference(angular=angular):
            xn = F.normalize(x, dim=1)
            s = xn @ xn.T
            partner = torch.arange(12).roll(6)
            pos = s[torch.arange(12), partner]
            pos = torch.cos(torch.acos(pos) + 0.1) if angular else pos - 0.1
            z = s.clone() / 0.07
            z[torch.arange(12), partner] = pos / 0.07
            z = z.masked_fill(torch.eye(12, dtype=torch.bool), -math.inf)
            return F.cross_entropy(z, partner)

        for engine in ("dense", "blocked"):
            loss = NTXentAMLoss(margin=0.1, angular=angular, engine=engine, block_size=5)
            same(lambda loss=loss: loss(x, views), reference, [x])


@pytest.mark.parametrize("engine, block", ENGINES)
@pytest.mark.parametrize("n_views", [2, 3])
def test_multiview_losses_match_the_authors_formulas(engine, block, n_views):
    z = randn(n_views, 7, 5, seed=9)
    t = 0.2

    def mv_infonce():
        u = F.normalize(z, dim=2)
        flat = u.reshape(-1, 5)
        e = torch.exp(flat @ flat.T / t) * (1 - torch.eye(flat.shape[0], dtype=z.dtype))
        denominator = e.sum(1).view(n_views, 7).sum(0)
        numerator = 2 * sum(
            torch.exp((u[v] * u[w]).sum(1) / t)
            for v, w in itertools.combinations(range(n_views), 2)
        )
        return -torch.log(numerator / denominator).mean()

    def mv_dhel():
        u = F.normalize(z, dim=2)
        within = [
            (torch.exp(u[v] @ u[v].T / t) * (1 - torch.eye(7, dtype=z.dtype))).sum(1)
            for v in range(n_views)
        ]
        numerator = sum(
            torch.exp((u[v] * u[w]).sum(1) / t)
            for v, w in itertools.combinations(range(n_views), 2)
        )
        return -torch.log(numerator / torch.stack(within).prod(0)).mean()

    same(lambda: MultiViewInfoNCELoss(t, engine=engine, block_size=block)(z), mv_infonce, [z])
    same(lambda: MVDHELLoss(t, engine=engine, block_size=block)(list(z.unbind(0))), mv_dhel, [z])


@pytest.mark.parametrize("engine, block", ENGINES)
def test_cacr_matches_the_authors_loss(engine, block):
    z = randn(3, 6, 4, seed=10)
    alpha, beta, tau_pos, tau_neg = 1.5, 0.7, 0.8, 1.3

    def reference():  # the authors' our_loss1 + our_loss2 (Euclidean cost), on unit features
        codes = list(F.normalize(z, dim=2).unbind(0))
        pull = 0
        for x in range(3):
            others = torch.stack([codes[k] for k in range(3) if k != x])
            cost = (codes[x] - others).norm(dim=-1).pow(2).transpose(1, 0) * alpha
            pull = pull + (cost * torch.softmax(cost * tau_pos / alpha, dim=1)).sum(1).mean()
        push, count = 0, 0
        for x, y in itertools.combinations(range(3), 2):
            cost = -beta * torch.cdist(codes[x], codes[y]).pow(2)
            cost = cost.masked_select(~torch.eye(6, dtype=torch.bool)).view(6, 5)
            push = push + (cost * torch.softmax(cost * tau_neg / beta, dim=1)).sum(1).mean()
            count += 1
        return pull / 3 + push / count

    same(
        lambda: CACRLoss(alpha, beta, tau_pos, tau_neg, engine=engine, block_size=block)(z),
        reference,
        [z],
        atol=1e-10,
    )


@pytest.mark.parametrize("engine, block", ENGINES)
@pytest.mark.parametrize("n_views, topk", [(2, 3), (3, 10)])
def test_groco_matches_the_authors_loss(engine, block, n_views, topk):
    diffsort = pytest.importorskip("diffsort")
    z = randn(n_views, 6, 4, seed=11)
    steepness = 2.0

    def reference():  # the authors' GroCo.compute_loss with diffsort, stop-gradient on
        unit = F.normalize(z, dim=2)
        k = min(topk, 5)
        n = (n_views - 1) + k
        sorter = diffsort.DiffSortNet(
            "odd_even", n, steepness=steepness, interpolation_type="cauchy"
        )
        sorter.sorting_network = [[m.double() for m in ms] for ms in sorter.sorting_network]
        total = 0
        for v in range(n_views):
            anchor = unit[v]
            pos = torch.stack(
                [(anchor * unit[w].detach()).sum(1) for w in range(n_views) if w != v], 1
            )
            neg = (anchor @ anchor.detach().T).masked_fill(
                torch.eye(6, dtype=torch.bool), -math.inf
            )
            pos = torch.sort(pos, 1).values
            neg = torch.topk(neg, k, 1).values.flip(1)
            _, perm = sorter(torch.cat([neg, pos], 1))
            target = F.one_hot(torch.arange(n)).T.double()[None].repeat(6, 1, 1)
            p_neg, p_pos = (
                perm[:, :, :k].sum(2, keepdim=True).clip(0, 1),
                perm[:, :, k:].sum(2, keepdim=True).clip(0, 1),
            )
            t_neg, t_pos = (
                target[:, :, :k].sum(2, keepdim=True),
                target[:, :, k:].sum(2, keepdim=True),
            )
            total = (
                total
                + (F.binary_cross_entropy(p_pos, t_pos) + F.binary_cross_entropy(p_neg, t_neg)) / 2
            )
        return total / n_views

    same(lambda: GroCoLoss(topk, steepness, engine=engine, block_size=block)(z), reference, [z])


def test_isogclr_gradients_and_temperature_step_are_the_objectives():
    a, b = randn(6, 4, seed=12), randn(6, 4, seed=13)
    index = torch.tensor([3, 0, 7, 5, 1, 9])
    loss = ISogCLRLoss(num_samples=10, temperature=0.3)
    tau0 = loss.tau[index].clone().requires_grad_()

    def objective(tau):  # the robust global contrastive objective F at the first step
        total = 0
        for x, y in ((a, b), (b, a)):
            xn, yn = F.normalize(x, dim=1), F.normalize(y, dim=1)
            sims = torch.cat([xn @ yn.T, xn @ xn.T], 1)
            h = sims - sims.diagonal()[:, None]
            neg = torch.ones(6, 12, dtype=torch.bool)
            neg[torch.arange(6), torch.arange(6)] = False
            neg[torch.arange(6), torch.arange(6) + 6] = False
            z = (h / tau[:, None]).masked_fill(~neg, -math.inf)
            total = total + (tau * (torch.logsumexp(z, 1) - math.log(10)) + tau * loss.rho).mean()
        return total

    for engine in ("dense", "blocked"):
        fresh = ISogCLRLoss(num_samples=10, temperature=0.3, engine=engine, block_size=4)
        got = torch.autograd.grad(fresh(a, b, index), [a, b])
        expected = torch.autograd.grad(objective(tau0.detach()), [a, b])
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e)
        (grad_tau,) = torch.autograd.grad(objective(tau0), [tau0])
        # F averages over the B samples and sums the two directions; a sample's temperature
        # moves by its own term's derivative averaged over the directions: B / 2 dF/dtau_i
        step = (tau0 - fresh.eta * fresh.beta * grad_tau * 6 / 2).clamp(
            fresh.tau_min, fresh.tau_max
        )
        torch.testing.assert_close(fresh.tau[index], step.detach())
        assert bool((fresh.u[index] > 0).all())
        fresh.eval()
        before = fresh.tau.clone()
        fresh(a, b, index)
        torch.testing.assert_close(fresh.tau, before)
    with pytest.raises(PairLossError, match="index"):
        loss(a, b, torch.tensor([0, 1, 2, 3, 4, 10]))


@pytest.mark.parametrize("engine, block", ENGINES)
def test_amcl_matches_the_authors_loss(engine, block):
    torch.manual_seed(0)
    loss = AMCLLoss(dim=4, num_heads=2, topk=3, beta=0.05, engine=engine, block_size=block).double()
    z1, z2 = randn(5, 2, 4, seed=14), randn(5, 2, 4, seed=15)

    def reference():  # the first author's AMCLNTXentLoss, written out
        def tau_of(x, y):
            return loss.tau_min + (loss.tau_max - loss.tau_min) * torch.sigmoid(
                -(loss.phi(x) * loss.phi(y)).sum(-1)
            )

        def direction(a, p, negatives):
            a, p, negatives = (
                F.normalize(a, dim=-1),
                F.normalize(p, dim=-1),
                F.normalize(negatives, dim=-1),
            )
            tau_pos = tau_of(a, p)
            sim_neg = (a[:, None, :] * negatives).sum(-1)
            tau_neg = tau_of(a[:, None, :].expand_as(negatives), negatives)
            vals, idx = sim_neg.topk(3, dim=1)
            tau_top = tau_neg.gather(1, idx)
            reg_neg = 0.05 * (tau_top.log().sum(1) + (1 / tau_top).sum(1))
            return (
                -(a * p).sum(-1) / tau_pos
                + (vals / tau_top).mean(1)
                + 0.05 * temperature_regulariser(tau_pos, 4)
                - reg_neg
            ).mean()

        eye = torch.eye(5, dtype=torch.bool)
        total = 0
        for h in range(2):
            same_view = z1[:, h][None].expand(5, -1, -1)[~eye].view(5, 4, 4)
            other_view = z2[:, h][None].expand(5, -1, -1)[~eye].view(5, 4, 4)
            total = (
                total
                + (
                    direction(z1[:, h], z2[:, h], torch.cat([same_view, other_view], 1))
                    + direction(z2[:, h], z1[:, h], torch.cat([other_view, same_view], 1))
                )
                / 2
            )
        return total

    same(lambda: loss(z1, z2), reference, [z1, z2, *loss.parameters()])
    with pytest.raises(PairLossError, match="z1"):
        loss(z1[:, :1], z2[:, :1])
