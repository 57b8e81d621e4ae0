"""Autodiff adapters that give each framework the exact gradients of the families' gradient
tables: torch ``autograd.Function`` (``torch_rules``, ``torch_linear``) and ``jax.custom_jvp``
(``jax_rules``). Each imports its framework and is imported only when that framework's arrays
arrive.
"""
