"""Other libraries' names and call conventions on pairloss: import the submodule of the library
you are moving from (e.g. :mod:`pairloss.compat.sentence_transformers`) and keep your code."""
