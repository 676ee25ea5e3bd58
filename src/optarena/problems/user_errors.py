"""How a user's problem reports bad input: `UserCodeError`, and the user's part of a traceback."""

from __future__ import annotations

import traceback

from torch import Tensor


class UserCodeError(ValueError):
    """The user's model, data or loss failed a check. ``str()`` names the function and the cause;
    ``__cause__`` holds the user's exception (with its traceback) where there is one."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def user_traceback(error: BaseException) -> str:
    """The traceback of `error` without the leading frames of optarena and importlib; "" when no
    frame is left (an error optarena raised itself, already said in the message)."""
    tb = error.__traceback__
    package = __file__.rsplit("problems", 1)[0]
    while tb is not None and (tb.tb_frame.f_code.co_filename.startswith(package)
                              or tb.tb_frame.f_code.co_filename.startswith("<frozen")):
        tb = tb.tb_next
    if tb is None:
        return ""
    return "".join(traceback.format_exception(type(error), error, tb))


def describe(error: BaseException) -> str:
    """"Type: first line of the message"."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def shape(t: Tensor) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')}"
