"""``backend.modules.k_prediction``: the k-diffusion predictors.

``Prediction`` (epsilon / v) registers ``alphas_cumprod``, ``sigmas`` and
``log_sigmas`` buffers from the scheduler's scaled-linear betas;
``PredictionDiscreteFlow`` (Neo's rectified-flow SDXL) has only ``sigmas``
and ``prediction_type == "const"``.
"""

import torch


class AbstractPrediction(torch.nn.Module):
    def __init__(self, sigma_data=1.0, prediction_type="epsilon"):
        super().__init__()
        self.sigma_data = sigma_data
        self.prediction_type = prediction_type
        assert prediction_type in ("epsilon", "v_prediction", "const")

    def calculate_input(self, sigma, noise):
        if self.prediction_type == "const":
            return noise
        sigma = sigma.view(sigma.shape[:1] + (1,) * (noise.ndim - 1))
        return noise / (sigma ** 2 + self.sigma_data ** 2) ** 0.5

    def calculate_denoised(self, sigma, model_output, model_input):
        sigma = sigma.view(sigma.shape[:1] + (1,) * (model_output.ndim - 1))
        if self.prediction_type == "v_prediction":
            return (model_input * self.sigma_data ** 2 / (sigma ** 2 + self.sigma_data ** 2)
                    - model_output * sigma * self.sigma_data / (sigma ** 2 + self.sigma_data ** 2) ** 0.5)
        return model_input - model_output * sigma


class Prediction(AbstractPrediction):
    def __init__(self, sigma_data=1.0, prediction_type="epsilon", beta_schedule="linear", linear_start=0.00085,
                 linear_end=0.012, timesteps=1000):
        super().__init__(sigma_data=sigma_data, prediction_type=prediction_type)
        betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.register_buffer("alphas_cumprod", alphas_cumprod.float())
        self.register_buffer("sigmas", sigmas.float())
        self.register_buffer("log_sigmas", sigmas.log().float())

    def set_sigmas(self, sigmas):
        self.register_buffer("sigmas", sigmas.float())
        self.register_buffer("log_sigmas", sigmas.log().float())

    def timestep(self, sigma):
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)

    def sigma(self, timestep):
        t = torch.clamp(timestep.float().to(self.log_sigmas.device), min=0, max=len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp().to(timestep.device)


class PredictionDiscreteFlow(AbstractPrediction):
    def __init__(self, model_config=None, shift=1.0, timesteps=1000):
        super().__init__(sigma_data=None, prediction_type="const")
        self.shift = shift
        self.register_buffer("sigmas", torch.arange(1, timesteps + 1) / timesteps)

    def timestep(self, sigma):
        return sigma * 1000

    def sigma(self, timestep):
        return timestep / 1000.0


def k_prediction_from_diffusers_scheduler(scheduler):
    config = scheduler.config
    assert config.prediction_type in ("epsilon", "v_prediction")
    return Prediction(1.0, config.prediction_type, "linear", config.beta_start, config.beta_end,
                      config.num_train_timesteps)
