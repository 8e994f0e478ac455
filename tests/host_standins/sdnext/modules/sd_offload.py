"""``modules.sd_offload`` of SD.Next, reduced to the balanced-offload hook.

``apply_balanced_offload(pipe)`` attaches ``OffloadHook`` to each component
the way accelerate's ``add_hook_to_module`` does: ``module._hf_hook`` is the
hook, ``module._old_forward`` the original forward, and ``forward`` calls
``pre_forward`` (which would move the component to ``devices.device`` and
offload the others), the old forward, then ``post_forward``. Calls are
counted in ``OffloadHook.calls``.
"""

import functools

from modules import devices


class OffloadHook:
    no_grad = False

    def __init__(self):
        self.calls = 0

    def pre_forward(self, module, *args, **kwargs):
        self.calls += 1
        if module.device != devices.device:
            module.to(devices.device)
        return args, kwargs

    def post_forward(self, module, output):
        return output


def add_hook_to_module(module, hook):
    module._hf_hook = hook
    module._old_forward = module.forward

    @functools.wraps(module._old_forward)
    def new_forward(*args, **kwargs):
        args, kwargs = module._hf_hook.pre_forward(module, *args, **kwargs)
        return module._hf_hook.post_forward(module, module._old_forward(*args, **kwargs))

    module.forward = new_forward
    return module


def apply_balanced_offload(sd_model):
    hook = OffloadHook()
    for name in ("unet", "text_encoder", "text_encoder_2", "vae"):
        component = getattr(sd_model, name, None)
        if component is not None:
            add_hook_to_module(component, hook)
    sd_model.offload_hook = hook
    return sd_model
