"""Preference losses against TRL: 1.16's DPO, KTO, CPO, ORPO and reward trainers (driven with
given log-probabilities), and 0.28's ``dpo_loss`` where the two versions differ."""

from __future__ import annotations

import warnings

import pytest
import torch

import pairloss
from pairloss.metrics import preference_metrics
from pairloss.objectives.preference import DPO_LOSS_TYPES

from ._trl import trl028_dpo_loss, trl_cpo_loss, trl_dpo, trl_kto, trl_orpo_loss, trl_reward_loss

pytestmark = pytest.mark.filterwarnings("ignore")
SEEDS = (0, 1, 2)


def pairs(seed: int, b: int = 7, dtype=torch.float64, spread: float = 20.0):
    """Log-probabilities (requiring grad) of chosen and rejected completions, the reference
    model's, and token counts."""
    g = torch.Generator().manual_seed(seed)

    def logps():
        return (-1.0 - spread * torch.rand(b, generator=g, dtype=dtype)).requires_grad_(True)

    c, r, rc, rr = logps(), logps(), logps(), logps()
    return (
        c,
        r,
        rc,
        rr,
        torch.randint(1, 12, (b,), generator=g),
        torch.randint(1, 12, (b,), generator=g),
    )


def grads(out, inputs):
    return [out.detach()] + [
        torch.zeros_like(x) if g is None else g
        for g, x in zip(torch.autograd.grad(out, inputs, allow_unused=True), inputs)
    ]


def assert_same(a, b, rtol=1e-10, atol=1e-12):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y.to(x.dtype), rtol=rtol, atol=atol)


@pytest.mark.parametrize("loss_type", DPO_LOSS_TYPES)
def test_every_dpo_loss_type_equals_trl(loss_type):
    smoothing = 0.2 if loss_type in ("robust", "exo_pair", "aot", "aot_unpaired") else 0.0
    for seed in SEEDS:
        c, r, rc, rr, tc, tr = pairs(seed)
        config = {"beta": 0.3, "loss_type": loss_type, "label_smoothing": smoothing}
        ours = pairloss.DPOLoss(**config)(c, r, rc, rr, tc, tr)
        theirs, _ = trl_dpo(c, r, rc, rr, tc, tr, **config)
        # TRL evaluates exo_pair's log(eps) and log(1 - eps) on a float32 tensor
        tol = {"rtol": 1e-7, "atol": 1e-9} if loss_type == "exo_pair" else {}
        assert_same(grads(ours, [c, r, rc, rr]), grads(theirs, [c, r, rc, rr]), **tol)


@pytest.mark.parametrize(
    "config",
    [
        {"loss_type": ["sigmoid", "bco_pair", "sft"], "loss_weights": [0.8, 0.2, 1.0]},  # MPO
        {"loss_type": ["ipo", "sigmoid_norm", "hinge"]},
        {"loss_type": ["robust", "aot"], "loss_weights": [2.0, -0.5], "label_smoothing": 0.1},
        {"loss_type": ["discopop", "apo_down"], "discopop_tau": 0.3},
        {"loss_type": ["sigmoid", "ipo"], "f_divergence_type": "forward_kl"},
        {"loss_type": ["hinge", "sft"], "f_divergence_type": "js_divergence"},
    ],
)
def test_loss_type_combinations_equal_trl(config):
    for seed in SEEDS:
        c, r, rc, rr, tc, tr = pairs(seed, spread=4.0)
        ours = pairloss.DPOLoss(beta=0.2, **config)(c, r, rc, rr, tc, tr)
        theirs, _ = trl_dpo(c, r, rc, rr, tc, tr, beta=0.2, **config)
        assert_same(grads(ours, [c, r, rc, rr]), grads(theirs, [c, r, rc, rr]))


@pytest.mark.parametrize("coef", [0.5, 1.0, 2.5])
def test_alpha_divergence_equals_trl_in_float32(coef):
    # TRL 1.16 clamps the alpha-divergence exponent per dtype and has no float64 entry
    c, r, rc, rr, tc, tr = pairs(3, dtype=torch.float32, spread=4.0)
    config = {
        "beta": 0.3,
        "loss_type": ["sigmoid", "exo_pair"],
        "f_divergence_type": "alpha_divergence",
        "f_alpha_divergence_coef": coef,
        "label_smoothing": 0.05,
    }
    ours = pairloss.DPOLoss(**config)(c, r, rc, rr, tc, tr)
    theirs, _ = trl_dpo(c, r, rc, rr, tc, tr, **config)
    assert_same(grads(ours, [c, r]), grads(theirs, [c, r]), rtol=1e-5, atol=1e-6)


def test_metrics_are_those_trl_logs():
    for seed in SEEDS:
        c, r, rc, rr, tc, _ = pairs(seed)
        r = r.detach().clone()
        r[:2] = (c[:2] - rc[:2] + rr[:2]).detach()  # equal rewards: not counted as accurate
        ones = torch.ones_like(tc)  # one token each: TRL's per-token sums give back the values
        _, logged = trl_dpo(c, r, rc, rr, ones, ones, beta=0.4)
        ours = preference_metrics(c, r, rc, rr, beta=0.4)
        for key, value in ours.items():
            # TRL casts the accuracies to float32
            assert value == pytest.approx(logged[key], rel=1e-7, abs=1e-12), key


def test_trl_028_sigmoid_label_smoothing_is_the_conservative_option():
    dpo_028 = trl028_dpo_loss()
    if dpo_028 is None:
        pytest.skip("TRL 0.28 not installed in .peers/trl028")
    for seed in SEEDS:
        c, r, rc, rr, tc, tr = pairs(seed, spread=4.0)
        ours = pairloss.DPOLoss(
            0.3, "sigmoid", label_smoothing=0.2, conservative=True, reduction="none"
        )
        theirs, chosen_rewards, _ = dpo_028(c, r, rc, rr, "sigmoid", beta=0.3, label_smoothing=0.2)
        assert_same(grads(ours(c, r, rc, rr).sum(), [c, r]), grads(theirs.sum(), [c, r]))
        # TRL 1.16 ignores label smoothing on "sigmoid": so does the default
        plain = pairloss.DPOLoss(0.3, "sigmoid", label_smoothing=0.2)(c, r, rc, rr)
        torch.testing.assert_close(plain, trl_dpo(c, r, rc, rr, tc, tr, beta=0.3)[0])
        # exo_pair with label_smoothing 0: TRL 0.28 (and the EXO paper) use 1e-3
        exo = pairloss.DPOLoss(0.3, "exo_pair", reduction="none")(c, r, rc, rr)
        theirs, _, _ = dpo_028(c, r, rc, rr, "exo_pair", beta=0.3)
        torch.testing.assert_close(exo, theirs, rtol=1e-12, atol=1e-12)
        for loss_type in ("hinge", "ipo", "nca_pair", "sppo_hard", "apo_zero", "discopop"):
            ours = pairloss.DPOLoss(0.3, loss_type, reduction="none")(c, r, rc, rr)
            theirs, _, _ = dpo_028(c, r, rc, rr, loss_type, beta=0.3)
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss_type", ["kto", "apo_zero_unpaired"])
def test_kto_equals_trl(loss_type):
    for seed in SEEDS:
        g = torch.Generator().manual_seed(seed)
        x, ref, kl, kl_ref = (
            (-1 - 10 * torch.rand(8, generator=g, dtype=torch.float64)).requires_grad_(True)
            for _ in range(4)
        )
        labels = torch.rand(8, generator=g) < 0.5
        tokens = torch.randint(1, 9, (8,), generator=g)
        config = {"beta": 0.3, "desirable_weight": 1.5, "undesirable_weight": 0.7}
        ours = pairloss.KTOLoss(loss_type=loss_type, **config)(x, ref, labels, kl, kl_ref)
        theirs, _ = trl_kto(x, ref, labels, kl, kl_ref, tokens, loss_type=loss_type, **config)
        assert_same(grads(ours, [x, ref]), grads(theirs, [x, ref]))


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo", "simpo"])
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_cpo_equals_trl(loss_type, alpha):
    for seed in SEEDS:
        c, r, _, _, tc, tr = pairs(seed, spread=3.0)
        config = {"beta": 0.5, "loss_type": loss_type, "label_smoothing": 0.1, "alpha": alpha}
        ours = pairloss.CPOLoss(cpo_alpha=0.0, simpo_gamma=0.7, reduction="none", **config)(
            c, r, tc, tr
        )
        if loss_type in ("ipo", "simpo"):  # TRL averages these log-probabilities per token
            theirs, _, _ = trl_cpo_loss(c / tc, r / tr, simpo_gamma=0.7, **config)
        else:
            theirs, _, _ = trl_cpo_loss(c, r, simpo_gamma=0.7, **config)
        assert_same(grads(ours.sum(), [c, r]), grads(theirs.sum(), [c, r]))
    # the NLL term: the chosen completions' negative log-likelihood per token
    with_nll = pairloss.CPOLoss(cpo_alpha=2.0, loss_type=loss_type)(c, r, tc, tr)
    without = pairloss.CPOLoss(cpo_alpha=0.0, loss_type=loss_type)(c, r, tc, tr)
    torch.testing.assert_close(with_nll - without, 2.0 * (-c.sum() / tc.sum()))


def test_simpo_is_cpo_simpo_without_nll():
    c, r, _, _, tc, tr = pairs(4)
    torch.testing.assert_close(
        pairloss.SimPOLoss(beta=2.0, gamma=1.0)(c, r, tc, tr),
        pairloss.CPOLoss(2.0, "simpo", cpo_alpha=0.0, simpo_gamma=1.0)(c, r, tc, tr),
    )


def test_orpo_equals_trl_in_float32():
    # TRL's odds_ratio_loss computes in float32 whatever the input
    for seed in SEEDS:
        c, r, _, _, tc, tr = pairs(seed, dtype=torch.float32, spread=6.0)
        ours = pairloss.ORPOLoss(beta=0.25, reduction="none")(c, r, tc, tr)
        nll = -c.sum() / tc.sum()
        theirs, _, _, _, _ = trl_orpo_loss(c / tc, r / tr, beta=0.25)
        assert_same(grads((ours - nll).sum(), [c, r]), grads(-theirs.sum(), [c, r]), 1e-6, 1e-6)


@pytest.mark.parametrize("center", [None, 0.01])
@pytest.mark.parametrize("with_margin", [False, True])
def test_bradley_terry_equals_trl_reward_trainer(center, with_margin):
    for seed in SEEDS:
        g = torch.Generator().manual_seed(seed)
        rw = torch.randn(9, generator=g, dtype=torch.float64, requires_grad=True)
        rl = torch.randn(9, generator=g, dtype=torch.float64, requires_grad=True)
        margin = torch.rand(9, generator=g, dtype=torch.float64) if with_margin else None
        ours = pairloss.BradleyTerryLoss(center_rewards_coefficient=center)(rw, rl, margin)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs, logged = trl_reward_loss(rw, rl, margin, center)
        assert_same(grads(ours, [rw, rl]), grads(theirs, [rw, rl]))
        assert logged["accuracy"] == pytest.approx(float((rw > rl).double().mean()))
