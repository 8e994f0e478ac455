"""``comfy.latent_formats``: ``process_in`` multiplies VAE latents by the scale (SD1/SD2 0.18215, SDXL 0.13025)."""


class LatentFormat:
    scale_factor = 1.0

    def process_in(self, latent):
        return latent * self.scale_factor

    def process_out(self, latent):
        return latent / self.scale_factor


class SD15(LatentFormat):
    def __init__(self, scale_factor=0.18215):
        self.scale_factor = scale_factor


class SDXL(LatentFormat):
    scale_factor = 0.13025
