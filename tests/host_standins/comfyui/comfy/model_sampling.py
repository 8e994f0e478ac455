"""``comfy.model_sampling``: the schedule (sigmas) and what the model's output means.

As in ComfyUI: ``ModelSamplingDiscrete`` registers ``sigmas`` / ``log_sigmas`` buffers from a
"linear" beta schedule (``linspace(sqrt(0.00085), sqrt(0.012), 1000) ** 2``); ``timestep(sigma)``
is the index of the nearest sigma; ``EPS`` scales the input by ``1 / sqrt(sigma^2 + 1)`` and
``V_PREDICTION`` (a subclass of ``EPS``) reads the output as v; ``EDM`` subclasses ``V_PREDICTION``.
"""

import torch


class EPS:
    def calculate_input(self, sigma, noise):
        sigma = sigma.view(sigma.shape[:1] + (1,) * (noise.ndim - 1))
        return noise / (sigma ** 2 + self.sigma_data ** 2) ** 0.5

    def calculate_denoised(self, sigma, model_output, model_input):
        sigma = sigma.view(sigma.shape[:1] + (1,) * (model_output.ndim - 1))
        return model_input - model_output * sigma


class V_PREDICTION(EPS):
    def calculate_denoised(self, sigma, model_output, model_input):
        sigma = sigma.view(sigma.shape[:1] + (1,) * (model_output.ndim - 1))
        total = sigma ** 2 + self.sigma_data ** 2
        return model_input * self.sigma_data ** 2 / total - model_output * sigma * self.sigma_data / total ** 0.5


class EDM(V_PREDICTION):
    pass


class X0(EPS):
    def calculate_denoised(self, sigma, model_output, model_input):
        return model_output


class ModelSamplingDiscrete(torch.nn.Module):
    def __init__(self, model_config=None, zsnr=None):
        super().__init__()
        settings = model_config.sampling_settings if model_config is not None else {}
        start, end = settings.get("linear_start", 0.00085), settings.get("linear_end", 0.012)
        timesteps = settings.get("timesteps", 1000)
        betas = torch.linspace(start ** 0.5, end ** 0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.num_timesteps = timesteps
        self.set_sigmas(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5)
        self.sigma_data = 1.0

    def set_sigmas(self, sigmas):
        self.register_buffer("sigmas", sigmas.float())
        self.register_buffer("log_sigmas", sigmas.log().float())

    def timestep(self, sigma):
        distances = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return distances.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)


class ModelSamplingContinuousEDM(torch.nn.Module):
    def __init__(self, model_config=None):
        super().__init__()
        self.sigma_data = 1.0
