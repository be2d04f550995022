"""Listwise preference losses: identities with DPO at K = 2, the authors' formulas, padding;
and bad or extreme input for every preference loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import pairloss
from pairloss.catalogue import LOSSES, example
from pairloss.errors import PairLossError
from pairloss.metrics import list_reward_accuracy, preference_metrics

PREFERENCE_ENTRIES = [e for e in LOSSES if e.family.startswith("preference")]


def pair_batch(seed=0, b=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [
        (-1 - 15 * torch.rand(b, generator=g, dtype=dtype)).requires_grad_(True) for _ in range(4)
    ]


def as_lists(c, r, rc, rr):
    return torch.stack([c, r], 1), torch.stack([rc, rr], 1)


def value_grads(out, inputs):
    return [out.detach(), *torch.autograd.grad(out, inputs)]


def assert_same(a, b, rtol=1e-12, atol=1e-14):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


HARD = torch.tensor([1.0, 0.0], dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_infonca_at_two_responses_with_hard_labels_is_dpo(seed):
    c, r, rc, rr = pair_batch(seed)
    logps, ref = as_lists(c, r, rc, rr)
    rewards = HARD.expand(c.shape[0], 2)
    ours = pairloss.InfoNCALoss(beta=0.3, alpha=1e-3)(logps, ref, rewards)
    assert_same(value_grads(ours, [c, r]), value_grads(pairloss.DPOLoss(0.3)(c, r, rc, rr), [c, r]))
    nca = pairloss.NCAPreferenceLoss(beta=0.3, alpha=1e-3)(logps, ref, rewards)
    nca_pair = pairloss.DPOLoss(0.3, "nca_pair")(c, r, rc, rr)
    assert_same(value_grads(nca, [c, r]), value_grads(nca_pair, [c, r]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lipo_lambda_at_two_responses_is_dpo_times_a_constant(seed):
    c, r, rc, rr = pair_batch(seed)
    logps, ref = as_lists(c, r, rc, rr)
    factor = 1.0 - 1.0 / math.log2(3.0)  # |G_w - G_l| |1/D(1) - 1/D(2)| with labels 1, 0
    lipo = pairloss.LiPOLambdaLoss(beta=0.3)(logps, ref, HARD.expand(c.shape[0], 2))
    dpo = pairloss.DPOLoss(0.3)(c, r, rc, rr)
    assert_same(value_grads(lipo, [c, r]), value_grads(factor * dpo, [c, r]))
    # with labels 2 and 0 the gain gap is 3
    lipo2 = pairloss.LiPOLambdaLoss(beta=0.3)(logps, ref, 2 * HARD.expand(c.shape[0], 2))
    torch.testing.assert_close(lipo2, 3 * factor * dpo)


def test_sppo_hard_is_twice_soft_sppo_with_hard_probabilities():
    c, r, rc, rr = pair_batch(3)
    logps, ref = as_lists(c, r, rc, rr)
    soft = pairloss.SPPOLoss(beta=0.4)(logps, ref, HARD.expand(c.shape[0], 2))
    hard = pairloss.DPOLoss(0.4, "sppo_hard")(c, r, rc, rr)
    assert_same(value_grads(2 * soft, [c, r]), value_grads(hard, [c, r]))


def test_mmpo_is_the_authors_soft_dpo_and_dpo_at_large_gamma():
    c, r, rc, rr = pair_batch(4)
    logps, ref = as_lists(c, r, rc, rr)
    g = torch.Generator().manual_seed(5)
    score_c = 5 + 3 * torch.rand(c.shape[0], generator=g, dtype=torch.float64)
    score_r = 5 * torch.rand(c.shape[0], generator=g, dtype=torch.float64)
    scores = torch.stack([score_c, score_r], 1)
    ours = pairloss.MMPOLoss(beta=0.3, gamma=0.8)(logps, ref, scores)
    # the authors' code: p_chosen = 1 / (1 + exp(-bt_beta (score_chosen - score_rejected))) in
    # -logsigmoid(beta logits) p_chosen - logsigmoid(-beta logits) (1 - p_chosen), mean
    logits = (c - r) - (rc - rr)
    p = 1.0 / (1.0 + torch.exp(-0.8 * (score_c - score_r)))
    theirs = (-F.logsigmoid(0.3 * logits) * p - F.logsigmoid(-0.3 * logits) * (1 - p)).mean()
    assert_same(value_grads(ours, [c, r]), value_grads(theirs, [c, r]))
    hard = pairloss.MMPOLoss(beta=0.3, gamma=1e6)(logps, ref, scores)
    torch.testing.assert_close(hard, pairloss.DPOLoss(0.3)(c, r, rc, rr))


def test_infonca_and_nca_equal_the_authors_formulas_at_four_responses():
    g = torch.Generator().manual_seed(6)
    logps = -1 - 10 * torch.rand(5, 4, generator=g, dtype=torch.float64)
    ref = -1 - 10 * torch.rand(5, 4, generator=g, dtype=torch.float64)
    rewards = 10 * torch.rand(5, 4, generator=g, dtype=torch.float64)
    beta, alpha = 0.2, 0.5
    # the authors' NCATrainer.nca_loss: softlabel = softmax(rewards / temperature_alpha),
    # model_rewards = beta (policy - reference)
    soft = (rewards / alpha).softmax(dim=-1)
    model = beta * (logps - ref)
    infonca = -(soft * model.log_softmax(dim=-1)).sum(dim=-1).mean()
    nca = -F.logsigmoid(-model).mean() - (soft * F.logsigmoid(model)).sum(dim=-1).mean()
    torch.testing.assert_close(pairloss.InfoNCALoss(beta, alpha)(logps, ref, rewards), infonca)
    torch.testing.assert_close(pairloss.NCAPreferenceLoss(beta, alpha)(logps, ref, rewards), nca)


def test_irepo_regresses_on_the_logit_of_the_empirical_preference():
    c, r, rc, rr = pair_batch(7)
    logps, ref = as_lists(c, r, rc, rr)
    p = torch.linspace(0.0, 1.0, c.shape[0], dtype=torch.float64)
    prefs = torch.zeros(c.shape[0], 2, 2, dtype=torch.float64)
    prefs[:, 0, 1] = p
    clipped = p.clamp(1e-3, 1 - 1e-3)
    expected = ((0.3 * ((c - rc) - (r - rr)) - torch.log(clipped / (1 - clipped))) ** 2).mean()
    torch.testing.assert_close(pairloss.IREPOLoss(0.3)(logps, ref, prefs), expected)


@pytest.mark.parametrize(
    "make",
    [
        lambda: pairloss.LiPOLambdaLoss(0.2),
        lambda: pairloss.InfoNCALoss(0.2, 0.7),
        lambda: pairloss.NCAPreferenceLoss(0.2),
        lambda: pairloss.MMPOLoss(0.2, 2.0),
        lambda: pairloss.SPPOLoss(0.2),
    ],
)
def test_list_padding_changes_nothing(make):
    g = torch.Generator().manual_seed(8)
    logps = (-1 - 10 * torch.rand(4, 5, generator=g, dtype=torch.float64)).requires_grad_(True)
    ref = -1 - 10 * torch.rand(4, 5, generator=g, dtype=torch.float64)
    rewards = torch.rand(4, 5, generator=g, dtype=torch.float64)
    base = value_grads(make()(logps, ref, rewards), [logps])
    keep = torch.ones(4, 8, dtype=torch.bool)
    keep[:, [1, 4, 6]] = False
    big = torch.full((4, 8), math.nan, dtype=torch.float64)
    big[keep] = logps.detach().reshape(-1)
    big.requires_grad_(True)
    ref2 = torch.full((4, 8), math.nan, dtype=torch.float64)
    ref2[keep] = ref.reshape(-1)
    rew2 = torch.full((4, 8), 0.5, dtype=torch.float64)
    rew2[keep] = rewards.reshape(-1)
    padded = value_grads(make()(big, ref2, rew2, keep), [big])
    torch.testing.assert_close(padded[0], base[0])
    torch.testing.assert_close(padded[1][keep].reshape(4, 5), base[1])
    assert bool((padded[1][~keep] == 0).all())


def test_kto_without_kl_completions_has_no_kl_term():
    x, ref, kl, kl_ref = pair_batch(9)
    labels = torch.arange(6) % 3 == 0
    loss = pairloss.KTOLoss(beta=0.5)
    u = x - ref
    expected = torch.where(labels, 1 - torch.sigmoid(0.5 * u), 1 - torch.sigmoid(-0.5 * u)).mean()
    torch.testing.assert_close(loss(x, ref, labels), expected)
    # the KL estimate is clamped at 0 and carries no gradient
    with_kl = loss(x, ref, labels, kl, kl_ref)
    (g,) = torch.autograd.grad(with_kl, [kl], allow_unused=True)
    assert g is None or bool((g == 0).all())


def test_list_reward_accuracy_at_two_responses_is_trl_accuracy():
    c, r, rc, rr = pair_batch(10, b=40)
    logps, ref = as_lists(c, r, rc, rr)
    acc = list_reward_accuracy(logps, ref, HARD.expand(40, 2), beta=0.2)
    assert acc == preference_metrics(c, r, rc, rr, beta=0.2)["rewards/accuracies"]


@pytest.mark.parametrize("entry", PREFERENCE_ENTRIES, ids=lambda e: e.name)
def test_extreme_log_probabilities_stay_finite(entry):
    ex = example(entry, n=6, dim=4)
    call = dict(ex.call)
    for name in ("chosen_logps", "logps", "rewards_chosen"):
        if name in call:
            call[name] = call[name] * 1e3
    tensors = [v for v in call.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    tensors[0].requires_grad_(True)
    out = entry.load()(**ex.init)(**call)
    (g,) = torch.autograd.grad(out, tensors[0])
    assert torch.isfinite(out) and torch.isfinite(g).all()


@pytest.mark.parametrize("entry", PREFERENCE_ENTRIES, ids=lambda e: e.name)
def test_reduction_none_and_half_precision(entry):
    ex = example(entry, n=5, dim=3)
    per = entry.load()(reduction="none", **ex.init)(**ex.call)
    assert per.shape == (5,)
    half = {
        k: v.to(torch.bfloat16) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
        for k, v in ex.call.items()
    }
    out = entry.load()(**ex.init)(**half)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out)


@pytest.mark.parametrize("entry", PREFERENCE_ENTRIES, ids=lambda e: e.name)
def test_nan_or_wrong_shape_is_named(entry):
    ex = example(entry, n=5, dim=3)
    first = next(
        k for k, v in ex.call.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
    )
    bad = dict(ex.call)
    bad[first] = ex.call[first].clone()
    bad[first].view(-1)[1] = math.nan
    with pytest.raises(PairLossError, match=first):
        entry.load()(**ex.init)(**bad)
    bad[first] = ex.call[first][:-1]
    with pytest.raises(PairLossError):
        entry.load()(**ex.init)(**bad)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: pairloss.DPOLoss(loss_type="kto_pair"), "loss_type"),
        (
            lambda: pairloss.DPOLoss(loss_type=["sigmoid", "ipo"], loss_weights=[1.0]),
            "loss_weights",
        ),
        (lambda: pairloss.DPOLoss(loss_type="robust", label_smoothing=0.5), "label_smoothing"),
        (
            lambda: pairloss.DPOLoss(loss_type="bco_pair", f_divergence_type="js_divergence"),
            "f_div",
        ),
        (lambda: pairloss.DPOLoss(beta=0), "beta"),
        (lambda: pairloss.DPOLoss(conservative="yes"), "conservative"),
        (lambda: pairloss.CPOLoss(loss_type="kto"), "loss_type"),
        (lambda: pairloss.KTOLoss(loss_type="dpo"), "loss_type"),
        (lambda: pairloss.IREPOLoss(eps=0.6), "eps"),
    ],
)
def test_bad_hyper_parameters_are_named(make, match):
    with pytest.raises(PairLossError, match=match):
        make()


def test_bad_call_arguments_are_named():
    c, r, rc, rr = pair_batch(11)
    with pytest.raises(PairLossError, match="ref_rejected_logps"):
        pairloss.DPOLoss()(c, r, rc)
    with pytest.raises(PairLossError, match="ref_chosen_logps: required"):
        pairloss.DPOLoss()(c, r)
    torch.testing.assert_close(
        pairloss.DPOLoss(reference_free=True)(c, r), pairloss.DPOLoss()(c, r, rc * 0, rr * 0)
    )
    with pytest.raises(PairLossError, match="chosen_tokens"):
        pairloss.DPOLoss()(c, r, rc, rr, torch.zeros(6), torch.ones(6))
    with pytest.raises(PairLossError, match="average log-probability >= 0"):
        pairloss.ORPOLoss()(torch.zeros(6, dtype=torch.float64), r)
    with pytest.raises(PairLossError, match="labels: expected a boolean"):
        pairloss.KTOLoss()(c, rc, torch.ones(6))
    lists = torch.stack([c, r], 1).detach()
    with pytest.raises(PairLossError, match="win probabilities"):
        pairloss.SPPOLoss()(lists, lists, torch.full_like(lists, 2.0))
    with pytest.raises(PairLossError, match="labels must be >= 0"):
        pairloss.LiPOLambdaLoss()(lists, lists, -torch.ones_like(lists))
    with pytest.raises(PairLossError, match="preferences"):
        pairloss.IREPOLoss()(lists, lists, torch.rand(6, 3, 3, dtype=torch.float64))
    with pytest.raises(PairLossError, match="mask"):
        pairloss.InfoNCALoss()(lists, lists, lists, torch.ones(6, 2))
