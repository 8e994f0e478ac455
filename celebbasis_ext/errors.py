"""Error types shared by the engine, the CLI, the tab and the HTTP API.

Each front end maps them the same way: ``BadInput`` is the user's to fix
(CLI exit 2, HTTP 4xx, a message in the tab), ``TuningFailed`` is a runtime
failure (CLI exit 1, HTTP 500 with a message), ``Cancelled`` is a user's
choice and never an error message.
"""


class CelebBasisError(Exception):
    """Base class: the message is one line meant for the user."""


class BadInput(CelebBasisError, ValueError):
    """The input (photo, name, option, model file) cannot be used as given."""


class NoFaceFound(BadInput):
    """No usable face in a photo."""


class ModelFilesMissing(BadInput):
    """Face or tokenizer model files are not available offline."""


class UnsupportedModel(BadInput):
    """The model is not one this engine can tune (refiner, inpainting, ...)."""


class TuningFailed(CelebBasisError, RuntimeError):
    """Tuning ran but failed (out of memory, NaN loss, ...)."""


class Cancelled(CelebBasisError):
    """The user cancelled; nothing was written."""


def one_line(error: BaseException) -> str:
    """An exception as one line for the user (never a traceback)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, MemoryError) or "out of memory" in text.lower():
        return ("out of memory: choose the Fast preset or a smaller resolution, start the WebUI with --medvram, "
                "or close other programs using the GPU")
    if isinstance(error, CelebBasisError):  # written for the user already
        return text
    return text if type(error).__name__ in text else f"{type(error).__name__}: {text}"
