"""Text jobs: a sentence encoder (all-MiniLM-L6-v2, offline) and STS-B training and evaluation.

See :mod:`pairloss.text.encoder` and :mod:`pairloss.text.sts`; the readers are in
:mod:`pairloss.data.sentence_pairs` and the Spearman metric in :mod:`pairloss.metrics.sts`.
"""
