"""alpaca_nb: the helper module behind the alpaca-notebooks lessons.

One file per pipeline stage; the notebooks and the ``alpaca-nb`` command line call the same functions.
Heavy libraries (torch, transformers, spaCy) are imported inside functions so ``import alpaca_nb`` is instant.
"""
__version__ = "0.1.0"
