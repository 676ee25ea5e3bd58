"""optarena: the eight optimizers of the article and today's contenders, exactly, and an arena that
tests the article's claims."""

__version__ = "0.2.0"  # keep equal to pyproject.toml (a test checks)


def compare(*args, **kwargs):
    """Tuned, equal-budget comparison of optimizers on your own model: see `optarena.comparison.compare`."""
    from optarena.comparison import compare as _compare

    return _compare(*args, **kwargs)
