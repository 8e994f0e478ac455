"""``backend.nn.vae``: ``IntegratedAutoencoderKL`` (tiny encoder/decoder; same ``encode(x, regulation)``,
``decode``, ``process_in``/``process_out`` and ``scaling_factor``)."""

import torch
from torch import nn


class DiagonalGaussianDistribution:
    def __init__(self, parameters):
        self.mean, logvar = torch.chunk(parameters, 2, dim=1)
        self.std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))

    def sample(self):
        return self.mean + self.std * torch.randn_like(self.mean)

    def mode(self):
        return self.mean


class IntegratedAutoencoderKL(nn.Module):
    def __init__(self, latent_channels=4, channels=16, scaling_factor=0.18215, shift_factor=0.0):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(channels, 2 * latent_channels, 3, stride=2, padding=1))
        self.decoder = nn.Sequential(nn.Upsample(scale_factor=8.0), nn.Conv2d(latent_channels, 3, 3, padding=1))
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)
        self.scaling_factor = scaling_factor
        self.shift_factor = shift_factor

    def encode(self, x, regulation=None):
        posterior = DiagonalGaussianDistribution(self.quant_conv(self.encoder(x)))
        return regulation(posterior) if regulation is not None else posterior.sample()

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))

    def process_in(self, latent):
        return (latent - self.shift_factor) * self.scaling_factor

    def process_out(self, latent):
        return latent / self.scaling_factor + self.shift_factor
