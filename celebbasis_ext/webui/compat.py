"""Small compatibility helpers for running the tab outside a WebUI host."""

from __future__ import annotations

import os
import sys


class _HfFolder:
    """The token helper gradio 4.x imports from huggingface_hub (removed in huggingface_hub 1.0)."""

    @staticmethod
    def get_token():
        try:
            from huggingface_hub import get_token

            return get_token()
        except Exception:  # noqa: BLE001
            return None

    @staticmethod
    def save_token(token):  # pragma: no cover - never called by the tab
        raise NotImplementedError("use `hf auth login`")

    @staticmethod
    def delete_token():  # pragma: no cover
        raise NotImplementedError("use `hf auth logout`")


def import_gradio():
    """``import gradio``, also where gradio 4.x meets huggingface_hub >= 1.0.

    A host (A1111, Forge) has imported gradio long before the extension
    runs, so this only matters for the standalone UI and the tests. No usage
    data is sent: analytics are off unless the user turned them on.
    """
    if "gradio" in sys.modules:
        return sys.modules["gradio"]
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import huggingface_hub

        if not hasattr(huggingface_hub, "HfFolder"):
            huggingface_hub.HfFolder = _HfFolder
    except ImportError:
        pass
    import gradio

    return gradio
