"""optarena: the eight optimizers of the article, exactly, and an arena that tests its claims."""

__version__ = "0.1.0"


def compare(*args, **kwargs):
    """Tuned, equal-budget comparison of optimizers on your own model: see `optarena.comparison.compare`."""
    from optarena.comparison import compare as _compare

    return _compare(*args, **kwargs)
