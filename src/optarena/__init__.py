"""optarena: the eight optimizers of the article, exactly, and an arena that tests its claims."""

__version__ = "0.1.0"
