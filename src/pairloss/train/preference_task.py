"""Preference optimisation on human judgements as a trainer task (``--dataset sts-b-preference``).

Data (:mod:`pairloss.data.preference`): every STS-B sentence paired with at least two others
whose human similarity scores (0-5) differ is an *anchor* (a prompt) with a list of rated
*candidates* (the responses); a candidate rated more similar to the anchor is preferred. STS-B
train gives 551 lists (1,737 preference pairs), dev 57 (picks the best epoch), test 104 (is
reported). Only human scores: no random negatives are added.

Policy and reference: the policy is the MiniLM sentence encoder being trained; the reference is
a frozen copy of the untrained encoder. A model's score of candidate ``c`` for anchor ``a`` is
``s(a, c) = 20 cos(e(a), e(c))`` (the scale of sentence-transformers' MNRL), and its
"log-probability" of ``c`` is a log-softmax over the anchor's candidate list::

    log pi(c | a) = s(a, c) - log sum_{c' in list(a)} exp s(a, c')

so the policy is a distribution over the candidates, as a language model's is over responses,
and the implicit reward of DPO-style losses is ``beta (log pi(c|a) - log pi_ref(c|a))``. The
normaliser cancels in every pairwise difference, so pairwise losses see ``s`` differences
only; CPO's NLL term and the listwise losses see the distribution.

How a loss trains (from its catalogue call convention):

* ``preference_pairs`` (``dpo`` with any TRL ``loss_type``, e.g. ``dpo:loss_type=ipo``): every
  pair of candidates of a list with different human scores, ``loss(log pi(chosen),
  log pi(rejected), log pi_ref(chosen), log pi_ref(rejected))``;
* ``preference_pairs_without_reference`` (``simpo``, ``cpo``, ``orpo``): the same pairs,
  ``loss(log pi(chosen), log pi(rejected))`` (one "token" per candidate);
* ``reward_pairs`` (``bradley_terry``): the same pairs, ``loss(s(chosen), s(rejected))``;
* ``preference_lists`` (``lipo_lambda``, ``infonca``, ``nca_preference``, ``mmpo``):
  ``loss(log pi [B, K], log pi_ref [B, K], human scores [B, K], mask)`` on the padded lists.

Evaluation on the held-out lists (``{setting: metrics}``, settings ``sts-b test`` and ``sts-b
dev``): ``ndcg`` (NDCG of the whole list, gain ``2^score - 1``, ties averaged, mean over lists)
and ``ndcg@1`` of the policy's scores against the human scores; ``pair_accuracy``, the share
of candidate pairs with different human scores that the policy orders as the annotators did
(strictly); ``reward_accuracy``, TRL's reward accuracy on the same pairs (the implicit reward
``log pi - log pi_ref`` of the preferred candidate strictly greater), which is 0 for the
untrained model by construction (its policy is the reference). The best epoch is the one with
the best dev NDCG; the untrained encoder is the baseline.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..catalogue import find
from ..data.preference import PreferenceLists, load_sts_scores, preference_lists
from ..errors import PairLossError
from ..metrics import list_reward_accuracy, ndcg_at_k
from .task import Results
from .text_task import (
    TEXT_MODEL,
    SplitResults,
    TextEncoderTask,
    both_splits,
    check_text_model,
)

SCORE_SCALE = 20.0
"""``s(a, c) = SCORE_SCALE cos(e(a), e(c))``: the policy's score of a candidate."""

CONVENTIONS = (
    "preference_pairs",
    "preference_pairs_without_reference",
    "reward_pairs",
    "preference_lists",
)
"""The preference losses' call conventions this task feeds."""


def check_preference_task(config: Any) -> None:
    """Refuse a model, embedding size or loss this task cannot train, before data is read."""
    check_text_model(config)
    entry = find(config.loss)
    if entry.inputs not in CONVENTIONS:
        raise PairLossError(
            f"loss: {entry.name} takes {entry.inputs!r} inputs; preference lists train the "
            "preference losses dpo (any loss_type, e.g. dpo:loss_type=ipo), simpo, cpo, "
            "orpo, bradley_terry, lipo_lambda, infonca, nca_preference, mmpo"
        )


def candidate_scores(model: nn.Module, lists: PreferenceLists) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s [B, K], mask [B, K])``: ``SCORE_SCALE`` times the cosine of each anchor's embedding
    with each of its candidates', padded to the longest list (padding 0, mask False); computed
    with ``model``'s forward (gradient flows when enabled)."""
    flat = [c for cands in lists.candidates for c in cands]
    emb = model(list(lists.anchors) + flat)
    anchors, cands = emb[: len(lists)], emb[len(lists) :]
    sizes = [len(c) for c in lists.candidates]
    rows = [
        SCORE_SCALE * nn.functional.cosine_similarity(anchors[i : i + 1], part, dim=1)
        for i, part in enumerate(cands.split(sizes))
    ]
    scores = nn.utils.rnn.pad_sequence(rows, batch_first=True)
    mask = torch.arange(scores.shape[1], device=emb.device) < torch.tensor(
        sizes, device=emb.device
    ).unsqueeze(1)
    return scores, mask


def list_logps(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``log pi(c | a)``: the log-softmax of ``scores`` [B, K] over each list's real candidates
    (``mask``); 0 at padding."""
    masked = torch.where(mask, scores, torch.full_like(scores, -torch.inf))
    return torch.where(mask, torch.log_softmax(masked, dim=1), torch.zeros_like(scores))


def pair_index(rewards: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(list, chosen, rejected)`` index vectors of every pair of real candidates of a list
    whose human scores differ (the higher-scored one chosen)."""
    better = mask[:, :, None] & mask[:, None, :] & (rewards[:, :, None] > rewards[:, None, :])
    return tuple(better.nonzero().unbind(dim=1))


def subset_lists(lists: PreferenceLists, rows: list[int]) -> PreferenceLists:
    """The lists at ``rows``."""
    return PreferenceLists(
        [lists.anchors[i] for i in rows],
        [lists.candidates[i] for i in rows],
        [lists.scores[i] for i in rows],
    )


class PreferenceTask(TextEncoderTask):
    """Preference optimisation of a scoring policy over rated candidates; see the module
    docstring.

    Args:
        train, validation, test: the preference lists of each split.
        config: the run's settings (``loss``, ``batch_size``, ``batches_per_epoch``, ``seed``,
            ``max_eval``).
    """

    name = "sts-b-preference"
    protocol = "preference lists"
    headline = "sts-b test"
    selection_metric = "ndcg"
    columns = (
        ("ndcg", "NDCG"),
        ("pair_accuracy", "pair accuracy"),
        ("reward_accuracy", "reward accuracy"),
    )

    def __init__(
        self, train: PreferenceLists, validation: PreferenceLists, test: PreferenceLists, config
    ) -> None:
        self.convention = find(config.loss).inputs
        self.train = train
        self.splits = {
            "validation": ("sts-b dev", self._limit(validation, config.max_eval, config.seed)),
            "test": ("sts-b test", self._limit(test, config.max_eval, config.seed + 1)),
        }
        for split, (_, lists) in self.splits.items():
            if len(lists) < 1:
                raise PairLossError(f"data_dir: no {split} preference list; expected at least 1")
        if len(train) < config.batch_size:
            raise PairLossError(
                f"batch_size: {config.batch_size} lists per batch, but STS-B train gives "
                f"{len(train)} preference lists; expected a smaller --batch-size"
            )
        self.reference: nn.Module | None = None
        self._reference_logps: dict[int, torch.Tensor] = {}
        self._held_out_reference: dict[str, torch.Tensor] = {}
        self._results = SplitResults()

    @staticmethod
    def _limit(lists: PreferenceLists, limit: int, seed: int) -> PreferenceLists:
        if not limit or len(lists) <= limit:
            return lists
        rows = torch.randperm(len(lists), generator=torch.Generator().manual_seed(seed))[:limit]
        return subset_lists(lists, sorted(rows.tolist()))

    def describe(self) -> str:
        sizes = ", ".join(f"{name} {len(lists)} lists" for name, lists in self.splits.values())
        return (
            f"{self.name}: train {len(self.train)} preference lists of STS-B sentences "
            f"(human scores), {sizes}; policy {TEXT_MODEL}, a frozen copy as reference"
        )

    def build_model(self, config: Any) -> nn.Module:
        from .models import build_model

        policy = build_model(TEXT_MODEL, config.embedding_size)
        self.reference = copy.deepcopy(policy).eval().requires_grad_(False)
        return policy

    def _reference_for(self, rows: list[int], device: torch.device) -> torch.Tensor:
        """The frozen reference's ``log pi_ref`` of the training lists at ``rows`` [B, K]
        (each list computed once)."""
        missing = [i for i in rows if i not in self._reference_logps]
        if missing:
            self.reference.to(device)
            with torch.no_grad():
                s, m = candidate_scores(self.reference, subset_lists(self.train, missing))
                logps = list_logps(s, m).cpu()
            for j, i in enumerate(missing):
                self._reference_logps[i] = logps[j, : len(self.train.candidates[i])]
        k = max(len(self.train.candidates[i]) for i in rows)
        out = torch.zeros(len(rows), k)
        for j, i in enumerate(rows):
            out[j, : len(self._reference_logps[i])] = self._reference_logps[i]
        return out.to(device)

    def loss_inputs(
        self, model: nn.Module, batch: Any, device: torch.device, step: int, train: bool = True
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        rows = list(batch)
        lists = subset_lists(self.train, rows)
        scores, mask = candidate_scores(model, lists)
        rewards = lists.tensors(scores.dtype)[0].to(device)
        logps = list_logps(scores, mask)
        if self.convention == "preference_lists":
            return (logps, self._reference_for(rows, device), rewards, mask), {}
        b, c, r = pair_index(rewards, mask)
        if self.convention == "reward_pairs":
            return (scores[b, c], scores[b, r]), {}
        if self.convention == "preference_pairs_without_reference":
            return (logps[b, c], logps[b, r]), {}
        ref = self._reference_for(rows, device)
        return (logps[b, c], logps[b, r], ref[b, c], ref[b, r]), {}

    # ------------------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def _scores(self, model: nn.Module, lists: PreferenceLists) -> tuple[torch.Tensor, ...]:
        was_training = model.training
        model.eval()
        try:
            s, m = candidate_scores(model, lists)
        finally:
            model.train(was_training)
        return s.double().cpu(), m.cpu()

    def _metrics(self, model: nn.Module, split: str) -> dict[str, float]:
        _, lists = self.splits[split]
        scores, mask = self._scores(model, lists)
        if split not in self._held_out_reference:
            if self.reference is None:
                raise PairLossError("model: build_model() makes the reference; call it first")
            self._held_out_reference[split] = list_logps(*self._scores(self.reference, lists))
        rewards = lists.tensors(torch.float64)[0]
        b, c, r = pair_index(rewards, mask)
        relevance = torch.where(mask, rewards, torch.full_like(rewards, -1.0))
        return {
            "ndcg": float(ndcg_at_k(scores, relevance, mask=mask)),
            "ndcg@1": float(ndcg_at_k(scores, relevance, k=1, mask=mask)),
            "pair_accuracy": float((scores[b, c] > scores[b, r]).double().mean()),
            "reward_accuracy": list_reward_accuracy(
                list_logps(scores, mask), self._held_out_reference[split], rewards, mask, beta=1.0
            ),
        }

    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> Results:
        return self._results.get(
            split, model, lambda: {self.splits[split][0]: self._metrics(model, split)}
        )

    def baselines(
        self, config: Any, untrained: nn.Module, device: torch.device
    ) -> dict[str, Results]:
        return {"untrained model (the reference)": both_splits(self, untrained, device)}

    def representations(self, model: nn.Module, device: torch.device) -> dict[str, Results]:
        return {f"trained {TEXT_MODEL} policy": both_splits(self, model, device)}

    def prediction_sample(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        _, lists = self.splits["test"]
        scores, mask = self._scores(model, lists)
        rewards = lists.tensors(torch.float64)[0]
        return {
            "gold": rewards[mask].numpy(),
            "predicted": (scores[mask] / SCORE_SCALE).numpy(),
            "gold_label": "human similarity score of the candidate",
            "predicted_label": "policy score s / 20 (cosine)",
        }


def sts_b_preference_task(config: Any) -> PreferenceTask:
    """The ``sts-b-preference`` task: preference lists of STS-B train / dev / test."""
    root: Path | None = None if config.data_dir is None else Path(config.data_dir)
    return PreferenceTask(
        *(preference_lists(load_sts_scores(s, root)) for s in ("train", "dev", "test")),
        config,
    )
