"""Catalogue family G: mining and pair generation beyond a miner's row rule.

- :class:`~pairloss.mining.DistanceWeightedMiner` (in :mod:`pairloss.mining`): distance-weighted
  sampling of negatives (Wu et al., ICCV 2017).
- :class:`DBPM`: dynamic bad pair mining, a memory of each positive pair's loss that flags and
  down-weights noisy and faulty positives (Lan et al., ICLR 2024).
- :class:`Metrix`: mixup of inputs, features or embeddings with interpolated pair labels
  (Venkataramanan et al., ICLR 2022).
- :class:`ProxyBank` and :class:`GlobalProxySampler`: batches built from each class's nearest
  classes by their proxies (Ali-bey et al., BMVC 2022).
- :func:`mine_hard_negatives`: offline hard negatives of each query from a corpus with FAISS,
  with absolute and relative false-negative margins.
"""

from .dbpm import DBPM
from .metrix import Metrix
from .offline_negatives import mine_hard_negatives
from .proxy_sampler import GlobalProxySampler, ProxyBank

__all__ = ["DBPM", "GlobalProxySampler", "Metrix", "ProxyBank", "mine_hard_negatives"]
