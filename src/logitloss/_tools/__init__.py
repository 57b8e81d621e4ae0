"""Applications built on the library, apart from it: the mpmath oracle, ``logitloss demo``,
``stability``, ``eval`` (local and Dask engines) and ``bench``. ``import logitloss`` imports none
of them; the command line (``logitloss.cli``) does, per command.
"""
