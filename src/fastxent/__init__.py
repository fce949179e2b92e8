"""fastxent: fast, exact softmax and sigmoid cross-entropy with logits for the CPU.

TensorFlow-style functions, Keras-style functions and classes, and loss objects over
interchangeable kernel backends (C/OpenMP, Numba, a NumPy reference) chosen per call.
``import fastxent`` imports none of the optional integrations (``fastxent.torch``,
``fastxent.jax``, ``fastxent.dask``, ``fastxent.sklearn``) and compiles nothing.
"""

from ._version import __version__
from ._plan import (BackendUnavailableError, available_backends, explain, reload_policy,
                    set_backend, use_backend)
from ._diagnostics import InputWarning
from ._info import show_config
from ._threads import get_num_threads, set_num_threads, threads
from ._checking import checking, get_check, set_check
from .keras import (BinaryCrossentropy, CategoricalCrossentropy, SparseCategoricalCrossentropy,
                    binary_crossentropy, categorical_crossentropy, sparse_categorical_crossentropy)
from .losses import (SigmoidCrossEntropy, SoftmaxCrossEntropy, SparseSoftmaxCrossEntropy,
                     log_softmax, logsumexp, sigmoid_cross_entropy_with_logits, softmax,
                     softmax_cross_entropy_with_logits, softmax_cross_entropy_with_logits_v2,
                     sparse_softmax_cross_entropy_with_logits, weighted_cross_entropy_with_logits)
from .linear import LinearSoftmaxCrossEntropy, linear_softmax_cross_entropy

__all__ = [
    "__version__",
    "softmax_cross_entropy_with_logits", "softmax_cross_entropy_with_logits_v2",
    "sparse_softmax_cross_entropy_with_logits", "sigmoid_cross_entropy_with_logits",
    "weighted_cross_entropy_with_logits", "log_softmax", "softmax", "logsumexp",
    "categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy",
    "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "BinaryCrossentropy",
    "SoftmaxCrossEntropy", "SparseSoftmaxCrossEntropy", "SigmoidCrossEntropy",
    "linear_softmax_cross_entropy", "LinearSoftmaxCrossEntropy",
    "set_backend", "use_backend", "available_backends", "reload_policy", "set_num_threads",
    "get_num_threads", "threads", "set_check", "get_check", "checking", "InputWarning",
    "explain", "show_config", "BackendUnavailableError",
]
