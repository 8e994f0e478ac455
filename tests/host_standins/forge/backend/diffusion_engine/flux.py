"""``backend.diffusion_engine.flux``: ``Flux`` (a flow-matching transformer; none of the legacy flags set)."""

from backend.diffusion_engine.base import ForgeDiffusionEngine, ForgeObjects
from backend.patcher.unet import UnetPatcher
from backend.modules.k_prediction import PredictionDiscreteFlow


class Flux(ForgeDiffusionEngine):
    def __init__(self, estimated_config, huggingface_components):
        super().__init__(estimated_config, huggingface_components)
        unet = UnetPatcher.from_model(model=huggingface_components["unet"], diffusers_scheduler=None,
                                      k_predictor=PredictionDiscreteFlow(estimated_config), config=estimated_config)
        self.forge_objects = ForgeObjects(unet=unet, clip=None, vae=None, clipvision=None)
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
