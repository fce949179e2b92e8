"""fastxent: softmax and sigmoid cross-entropy with logits for the CPU."""
from ._version import __version__
