"""Catalogue family A: metric learning on in-batch pairs, triplets and in-batch softmax.

One module per loss (class + functional form); the classes are exported from
:mod:`pairloss.losses` and the top level.
"""
