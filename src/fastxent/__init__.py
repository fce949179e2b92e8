"""fastxent: fast, exact softmax and sigmoid cross-entropy with logits for the CPU.

TensorFlow-style functions, Keras-style functions and loss objects over interchangeable
kernel backends (NumPy reference, Numba, Cython/OpenMP) chosen per call by a dispatcher.
"""

from ._version import __version__
from ._dispatch import (BackendUnavailableError, available_backends, explain, set_backend,
                        use_backend)
from ._info import show_config
from ._threads import get_num_threads, set_num_threads, threads
from .losses import (SigmoidCrossEntropy, SoftmaxCrossEntropy, SparseSoftmaxCrossEntropy,
                     binary_crossentropy, categorical_crossentropy, log_softmax, logsumexp,
                     sigmoid_cross_entropy_with_logits, softmax,
                     softmax_cross_entropy_with_logits, sparse_categorical_crossentropy,
                     sparse_softmax_cross_entropy_with_logits, weighted_cross_entropy_with_logits)

__all__ = [
    "__version__",
    "softmax_cross_entropy_with_logits", "sparse_softmax_cross_entropy_with_logits",
    "sigmoid_cross_entropy_with_logits", "weighted_cross_entropy_with_logits",
    "log_softmax", "softmax", "logsumexp",
    "categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy",
    "SoftmaxCrossEntropy", "SparseSoftmaxCrossEntropy", "SigmoidCrossEntropy",
    "set_backend", "use_backend", "available_backends", "set_num_threads", "get_num_threads",
    "threads", "explain", "show_config", "BackendUnavailableError",
]
