"""``logitloss eval``: the command's options (``command``), per-block evaluation (``evaluate``),
exact mergeable sums (``stats``) and the Dask engine (``dask_engine``).
"""
