"""The core every layer stands on: array namespaces and dtypes (``arrays``), argument and option
checks with their messages (``checks``, ``options``), the one reduction (``reductions``), exact
arithmetic in Array API form (``compensated``), and the kernel-or-reference switch (``route``).
Imports nothing else from the package.
"""
