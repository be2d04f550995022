"""Other libraries' objects and call conventions, translated to pairloss's.

:mod:`pairloss.compat.pml`: pytorch-metric-learning's distances, reducers, regularizers and
miners passed to pairloss losses, miners and regularizers.
"""
