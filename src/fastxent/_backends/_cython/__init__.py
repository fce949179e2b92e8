"""Compiled (Cython + C) kernels of the ``cython`` backend; see ``fastxent._backends.cython_``."""
