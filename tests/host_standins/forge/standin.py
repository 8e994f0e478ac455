"""Start a fresh stand-in Forge (main) or Forge Neo host inside the test process.

    from standin import boot, shutdown
    host = boot(tmp_path, flavor="neo", kind="sdxl")   # loads tiny-sdxl like the first generation would
    host.shared.sd_model ...; host.processing.txt2img("a photo of zqx") ...
    shutdown()                                         # drop the host's modules and sys.path entry

``boot`` drops every ``modules``, ``backend`` and ``modules_forge`` module from
``sys.modules`` (other stand-ins use the same top-level names), puts this
folder first on ``sys.path``, and imports the host afresh with
``FORGE_STANDIN_FLAVOR`` / ``FORGE_STANDIN_ROOT`` / ``FORGE_STANDIN_ATTENTION``
set. ``load=False`` leaves ``shared.sd_model`` a ``FakeInitialModel`` with
the checkpoint selected, as after start-up.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path
from typing import Optional

STANDIN_DIR = Path(__file__).resolve().parent
PACKAGES = ("modules", "backend", "modules_forge")


def purge() -> None:
    for name in [n for n in sys.modules if n.split(".")[0] in PACKAGES]:
        del sys.modules[name]


def shutdown() -> None:
    purge()
    while str(STANDIN_DIR) in sys.path:
        sys.path.remove(str(STANDIN_DIR))


def boot(root, *, flavor: str = "neo", kind: Optional[str] = "sd15", load: bool = True, attention: str = "sage",
         storage_dtype=None) -> types.SimpleNamespace:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    shutdown()
    sys.path.insert(0, str(STANDIN_DIR))
    os.environ.update(FORGE_STANDIN_FLAVOR=flavor, FORGE_STANDIN_ROOT=str(root), FORGE_STANDIN_ATTENTION=attention)
    names = ["modules.shared", "modules.sd_models", "modules.processing", "modules_forge.forge_version",
             "backend.args", "backend.attention", "backend.memory_management", "backend.nn.unet",
             "backend.text_processing.classic_engine"]
    mods = {name.split(".")[-1]: importlib.import_module(name) for name in names}
    host = types.SimpleNamespace(root=root, flavor=flavor, **mods)
    os.makedirs(mods["shared"].cmd_opts.embeddings_dir, exist_ok=True)
    if kind is not None:
        info = mods["sd_models"].CheckpointInfo(str(root / "models" / "Stable-diffusion" / f"tiny-{kind}.safetensors"))
        parameters = {"checkpoint_info": info, "unet_storage_dtype": storage_dtype}
        host.sd_models.model_data.forge_loading_parameters = parameters
        if load:
            host.sd_models.forge_model_reload()
    return host


def apply_lora(sd_model, name: str = "lora", strength: float = 1.0, seed: int = 0):
    """What Forge's LoRA extra network does: a UNet clone with patches becomes ``forge_objects.unet``."""
    import torch

    unet = sd_model.forge_objects_original.unet.clone()
    generator = torch.Generator().manual_seed(seed)
    patches = {key: torch.randn(param.shape, generator=generator) * 0.05
               for key, param in unet.model.named_parameters() if key.endswith("attn2.to_k.weight")}
    unet.add_patches(filename=name, patches=patches, strength_patch=strength)
    objects = sd_model.forge_objects_original.shallow_copy()
    objects.unet = unet
    sd_model.forge_objects = objects
    return unet
