"""The public functions: docstring, validation, routing (``dispatch``). ``tf_nn``: the four
``tf.nn`` losses; ``gradients``: their ``*_grad`` functions; ``training``, ``focal``, ``linear``:
the training losses with PyTorch's and optax's options.
"""
