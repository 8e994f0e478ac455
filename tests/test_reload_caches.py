"""After a new file, the host's cached conditioning (also hires fix's) is dropped."""

import sys
import types

from celebbasis_ext.hosts import reload


def test_clears_main_and_hires_conditioning_caches(monkeypatch):
    class StableDiffusionProcessing:
        cached_c = [("old", "cond"), 1, 2]
        cached_uc = [("old", "uncond"), 1, 2]
        cached_hr_c = [("old", "hires"), 1, 2]
        cached_hr_uc = [("old", "hires-u"), 1, 2]

    modules = types.ModuleType("modules")
    processing = types.ModuleType("modules.processing")
    processing.StableDiffusionProcessing = StableDiffusionProcessing
    modules.processing = processing
    monkeypatch.setitem(sys.modules, "modules", modules)
    monkeypatch.setitem(sys.modules, "modules.processing", processing)
    assert reload._clear_cached_conditioning() is True
    for name in ("cached_c", "cached_uc", "cached_hr_c", "cached_hr_uc"):
        assert getattr(StableDiffusionProcessing, name) == [None, None, None]
