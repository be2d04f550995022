"""Other libraries' names, objects and call conventions on pairloss.

Import the submodule of the library you are moving from and keep your code:
:mod:`pairloss.compat.sentence_transformers`, :mod:`pairloss.compat.open_clip` and
:mod:`pairloss.compat.lightly` take those libraries' calls; :mod:`pairloss.compat.pml` translates
pytorch-metric-learning's distances, reducers, regularizers and miners passed to pairloss losses,
miners and regularizers, and :mod:`pairloss.compat.pml_base` has its loss base classes, for
writing one's own loss (also exported here, from :mod:`pairloss.losses` and from
:mod:`pairloss`).
"""

from .pml_base import (
    BaseLossWrapper,
    BaseMetricLossFunction,
    EmbeddingRegularizerMixin,
    GenericPairLoss,
    WeightRegularizerMixin,
)

__all__ = [
    "BaseLossWrapper",
    "BaseMetricLossFunction",
    "EmbeddingRegularizerMixin",
    "GenericPairLoss",
    "WeightRegularizerMixin",
]
