"""The linear cross-entropy family: the softmax cross-entropy (integer labels) of a linear layer's
output, formed ``chunk_size`` rows at a time. ``chunked``: the algorithm, written once over a
backend adaptor; ``host``: NumPy's adaptor and entry point (torch's is ``_autodiff.torch_linear``).
"""
