"""The diagnostics mode's controls: ``set_check``, ``checking``, ``get_check``."""

from . import _boundary, _config


def set_check(mode):
    """Set the process-wide diagnostics mode: "off" (the default), "warn" or "raise"
    (None restores the default; ``FASTXENT_CHECK`` sets it from the environment)."""
    _config.set_global("check", None if mode is None else _boundary.check_mode(mode))


def checking(mode):
    """Context manager: diagnostics mode ``mode`` in this thread inside the ``with`` block."""
    return _config.scoped("check", _boundary.check_mode(mode))


def get_check():
    """The diagnostics mode a call made now from this thread would use."""
    return _boundary.check_mode(None)
