"""Catalogue family D: two towers, views, sentence pairs and self-supervision.

One module per loss (class + functional form); the classes are exported from
:mod:`pairloss.losses` and the top level. Two-tower losses run on
:mod:`pairloss.two_towers`; the in-batch losses on views run on :mod:`pairloss.engine`.
"""
