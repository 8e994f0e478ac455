"""Record a model's state before tuning and put every bit of it back afterwards.

Tuning borrows the user's loaded model. Whatever happens (success, cancel,
out of memory), each module's train/eval flag, each parameter's
``requires_grad``, device and dtype, any hook registered through the guard,
and hooks or flags that libraries add lazily during the run (transformers 5
installs output-capturing hooks on first use) are restored. Weights are never written to: only the learned slots get
gradients, so values need no copy (tests hash them to prove it).
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterable

import torch


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called")


class ModelStateGuard:
    """Context manager: ``with ModelStateGuard(modules) as guard: guard.freeze()``."""

    def __init__(self, modules: Iterable[torch.nn.Module]):
        self.modules = [m for m in modules if m is not None]
        self._training: list[tuple[torch.nn.Module, bool]] = []
        self._params: list[tuple[torch.nn.Parameter, bool, torch.device, torch.dtype]] = []
        self._undo: list[Callable[[], None]] = []
        self._hooks: list[tuple[torch.nn.Module, dict[str, set]]] = []
        self._attributes: list[tuple[torch.nn.Module, set]] = []

    def __enter__(self) -> "ModelStateGuard":
        seen: set[int] = set()
        for root in self.modules:
            for module in root.modules():
                if id(module) not in seen:
                    seen.add(id(module))
                    self._training.append((module, module.training))
                    self._hooks.append((module, {kind: set(getattr(module, kind)) for kind in _HOOK_DICTS
                                                 if hasattr(module, kind)}))
                    self._attributes.append((module, set(vars(module))))
            for param in root.parameters():
                if id(param) not in seen:
                    seen.add(id(param))
                    self._params.append((param, param.requires_grad, param.device, param.dtype))
        return self

    def freeze(self) -> None:
        """No parameter takes a gradient; every module in eval mode."""
        for module, _ in self._training:
            module.train(False)
        for param, *_ in self._params:
            param.requires_grad_(False)

    def on_exit(self, undo: Callable[[], None]) -> None:
        """Register an undo action (hook removal, attribute restore); run in reverse order."""
        self._undo.append(undo)

    def __exit__(self, *exc_info) -> None:
        errors = []
        for undo in reversed(self._undo):
            try:
                undo()
            except Exception as error:  # keep restoring the rest
                errors.append(error)
        self._undo.clear()
        for module, training in self._training:
            module.training = training
        for module, before in self._hooks:  # hooks others added lazily during the run
            for kind, keys in before.items():
                hooks = getattr(module, kind)
                for key in [key for key in hooks if key not in keys]:
                    del hooks[key]
        for module, before in self._attributes:  # flags such as "hooks installed"
            for attribute in [name for name in vars(module) if name not in before]:
                delattr(module, attribute)
        for param, requires_grad, device, dtype in self._params:
            if param.device != device or param.dtype != dtype:
                param.data = param.data.to(device=device, dtype=dtype)
            param.requires_grad_(requires_grad)
            param.grad = None
        if errors and exc_info[0] is None:
            raise errors[0]


def state_digest(modules: Iterable[torch.nn.Module]) -> dict[str, str]:
    """Per-tensor sha256 plus flags of every parameter and buffer: for tests and checks."""
    digest: dict[str, str] = {}
    for index, root in enumerate(modules):
        if root is None:
            continue
        for name, module in root.named_modules():
            digest[f"{index}:{name}:training"] = str(module.training)
            digest[f"{index}:{name}:hooks"] = str(
                (len(module._forward_hooks), len(module._forward_pre_hooks), len(module._backward_hooks))
            )
        for kind, items in (("param", root.named_parameters()), ("buffer", root.named_buffers())):
            for name, tensor in items:
                data = tensor.detach().to("cpu").contiguous()
                raw = data.reshape(-1).view(torch.uint8) if data.dtype != torch.bool else data.to(torch.uint8)
                flags = f"{tensor.dtype}|{tensor.device}|{tensor.requires_grad}|{tuple(tensor.shape)}"
                digest[f"{index}:{kind}:{name}"] = flags + "|" + hashlib.sha256(raw.numpy().tobytes()).hexdigest()
    return digest
