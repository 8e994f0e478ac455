"""Which WebUI this is, and which ``ModelAdapter`` fits the model it has loaded.

Detection is by capability, never by crashing: AUTOMATIC1111, Forge (lllyasviel
main), Forge Neo and Forge classic (Haoming02's branches, told apart by
``modules_forge.forge_version.version``), SD.Next (``modules.modeldata``), or
no host at all (the CLI, tests). Host modules are only looked up once the
host has imported its ``modules`` package; nothing imports ldm, sgm or
Forge's ``backend`` here, so importing this module is safe everywhere.

``adapter_for_loaded_model`` inspects the model object itself (a Forge
engine, an ldm/sgm model, a diffusers pipeline) and returns the adapter for
it, or raises ``UnsupportedModel`` with one line the tab and the API show:
no model loaded, Flux, SD3, Neo's flow-matching SDXL, the refiner,
inpainting, quantized weights, Forge classic.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from typing import Optional

from ..errors import UnsupportedModel


class HostKind(str, enum.Enum):
    A1111 = "a1111"
    FORGE = "forge"
    FORGE_NEO = "forge-neo"
    FORGE_CLASSIC = "forge-classic"
    SDNEXT = "sdnext"
    STANDALONE = "standalone"


_LABELS = {
    HostKind.A1111: "AUTOMATIC1111", HostKind.FORGE: "Forge", HostKind.FORGE_NEO: "Forge Neo",
    HostKind.FORGE_CLASSIC: "Forge classic", HostKind.SDNEXT: "SD.Next", HostKind.STANDALONE: "no WebUI",
}


@dataclass(frozen=True)
class HostInfo:
    kind: HostKind
    version: str = ""

    @property
    def label(self) -> str:
        return f"{_LABELS[self.kind]} {self.version}".strip()

    @property
    def is_forge_engine(self) -> bool:
        """Forge main and Neo: the model is a ``backend.diffusion_engine`` object."""
        return self.kind in (HostKind.FORGE, HostKind.FORGE_NEO)


def _loaded(name: str):
    """The module if the host can provide it: imported only when its top package already is."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    if name.split(".")[0] not in sys.modules:
        return None
    try:
        return importlib.import_module(name)
    except Exception:  # ImportError, or a host module failing at import time
        return None


def detect_host() -> HostInfo:
    """The running WebUI, from what its modules provide (see module docstring)."""
    try:
        return _detect_host()
    except Exception:  # never let detection take the extension down
        return HostInfo(HostKind.STANDALONE)


def _detect_host() -> HostInfo:
    if "modules" not in sys.modules and "modules_forge" not in sys.modules and "backend" not in sys.modules:
        return HostInfo(HostKind.STANDALONE)
    forge_version = _loaded("modules_forge.forge_version")
    if forge_version is None and "modules" in sys.modules and "modules_forge" not in sys.modules:
        try:  # Forge imports modules_forge early; be safe if an extension loads before that
            if importlib.util.find_spec("modules_forge") is not None:
                forge_version = importlib.import_module("modules_forge.forge_version")
        except Exception:
            forge_version = None
    if forge_version is not None:
        version = str(getattr(forge_version, "version", "") or "")
        release = str(getattr(forge_version, "release", "") or "")
        if version.lower().startswith("neo"):
            return HostInfo(HostKind.FORGE_NEO, release or version[3:].strip())
        if version.lower().startswith("classic"):
            return HostInfo(HostKind.FORGE_CLASSIC, release)
        return HostInfo(HostKind.FORGE, version)
    if _loaded("backend.memory_management") is not None and _loaded("backend.diffusion_engine") is not None:
        return HostInfo(HostKind.FORGE)  # Forge's engine without a version file
    if _loaded("modules.modeldata") is not None:
        return HostInfo(HostKind.SDNEXT)
    if _loaded("modules.shared") is not None:
        return HostInfo(HostKind.A1111)
    return HostInfo(HostKind.STANDALONE)


# ------------------------------------------------------------------ the loaded model
def _is_fake(sd_model) -> bool:
    return sd_model is None or type(sd_model).__name__ == "FakeInitialModel"


NO_MODEL = "no Stable Diffusion model is loaded: choose an SD 1.5 or SDXL checkpoint in the WebUI first"


def current_model(host: Optional[HostInfo] = None, load: bool = True):
    """The host's loaded model; with ``load`` the selected checkpoint is loaded first if none is (as txt2img does)."""
    host = host or detect_host()
    if host.kind == HostKind.STANDALONE:
        raise UnsupportedModel("there is no WebUI model here: give the command line a model path instead")
    if host.kind == HostKind.SDNEXT:
        modeldata = _loaded("modules.modeldata")
        model = getattr(getattr(modeldata, "model_data", None), "sd_model", None)
        if model is None and load:
            shared = _loaded("modules.shared")
            model = getattr(shared, "sd_model", None)  # SD.Next loads the selected checkpoint on access
        return model
    sd_models = _loaded("modules.sd_models")
    model_data = getattr(sd_models, "model_data", None)
    model = getattr(model_data, "sd_model", None)
    if _is_fake(model) and load:
        if host.is_forge_engine and hasattr(sd_models, "forge_model_reload"):
            try:
                sd_models.forge_model_reload()
            except Exception as error:
                reason = " ".join(str(error).split())[:300] or type(error).__name__
                raise UnsupportedModel(f"could not load the selected checkpoint: {reason}") from None
            model = getattr(model_data, "sd_model", None)
        else:
            shared = _loaded("modules.shared")
            model = getattr(shared, "sd_model", None)  # A1111 loads the default checkpoint on access
    return model


def model_kind(sd_model) -> str:
    """'forge-engine', 'forge-classic', 'diffusers' or 'ldm'; ``UnsupportedModel`` for anything else."""
    if _is_fake(sd_model):
        raise UnsupportedModel(NO_MODEL)
    if getattr(sd_model, "forge_objects", None) is not None or hasattr(sd_model, "forge_objects_original"):
        inner = getattr(sd_model, "model", None)
        if inner is not None and hasattr(inner, "diffusion_model"):
            return "forge-classic"  # an A1111 ldm model with Forge's patchers (Forge classic, Forge v1)
        return "forge-engine"
    if isinstance(getattr(sd_model, "components", None), dict) or type(sd_model).__module__.startswith("diffusers"):
        return "diffusers"
    inner = getattr(sd_model, "model", None)
    if inner is not None and hasattr(inner, "diffusion_model") and (
            hasattr(sd_model, "cond_stage_model") or hasattr(sd_model, "conditioner")):
        return "ldm"
    raise UnsupportedModel(f"the loaded model ({type(sd_model).__name__}) is not a Stable Diffusion 1.x/2.x/XL "
                           "model this extension can tune")


def _diffusers_refusal(pipe) -> Optional[str]:
    name = type(pipe).__name__
    if getattr(pipe, "unet", None) is None:
        for marker, label in (("Flux", "Flux"), ("StableDiffusion3", "Stable Diffusion 3"), ("Chroma", "Chroma")):
            if marker in name:
                return f"{label} models cannot be tuned: Celeb Basis works on SD 1.x, SD 2.x and SDXL checkpoints"
        return f"{name} has no UNet: Celeb Basis works on SD 1.x, SD 2.x and SDXL checkpoints"
    return None


def adapter_for_loaded_model(sd_model=None, *, host: Optional[HostInfo] = None, load: bool = True, **options):
    """The ``ModelAdapter`` for ``sd_model`` (default: the host's loaded model, loaded first if needed).

    ``options`` go to the adapter (``resolution=`` for all WebUI adapters).
    Raises ``UnsupportedModel`` with a one-line reason when it cannot be tuned.
    """
    host = host or detect_host()
    if sd_model is None:
        sd_model = current_model(host, load=load)
    kind = model_kind(sd_model)
    if kind == "forge-engine":
        from .forge import ForgeAdapter

        return ForgeAdapter(sd_model, **options)
    if kind == "forge-classic":
        raise UnsupportedModel("Forge classic (and Forge v1) models are not supported: "
                               "use Forge Neo, Forge or AUTOMATIC1111 to tune an identity")
    if kind == "diffusers":
        reason = _diffusers_refusal(sd_model)
        if reason:
            raise UnsupportedModel(reason)
        if host.kind == HostKind.SDNEXT:
            from .sdnext import SDNextAdapter

            return SDNextAdapter(sd_model, **options)
        from ..diffusers_adapter import DiffusersAdapter

        options.pop("resolution", None)
        return DiffusersAdapter(sd_model, **options)
    try:
        from .a1111 import A1111Adapter
    except ImportError:
        raise UnsupportedModel("this version of the extension cannot tune AUTOMATIC1111's models") from None
    return A1111Adapter(sd_model, **options)
