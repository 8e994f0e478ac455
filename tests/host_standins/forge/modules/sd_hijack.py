"""``modules/sd_hijack.py``: Forge main keeps the file with an empty ``StableDiffusionModelHijack`` (no
``embedding_db``: Forge's text engines have their own databases); Neo deleted it (importing it fails)."""

import os

if os.environ.get("FORGE_STANDIN_FLAVOR", "neo") == "neo":
    raise ModuleNotFoundError("No module named 'modules.sd_hijack'", name="modules.sd_hijack")


class StableDiffusionModelHijack:
    def apply_optimizations(self, option=None):
        pass

    def hijack(self, m):
        pass

    def undo_hijack(self, m):
        pass

    def get_prompt_lengths(self, text, cond_stage_model):
        from modules import shared

        return shared.sd_model.get_prompt_lengths_on_ui(text)


model_hijack = StableDiffusionModelHijack()
