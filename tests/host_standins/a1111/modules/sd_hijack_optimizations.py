"""modules/sd_hijack_optimizations.py: ``SdOptimization`` and the built-in list.

The real classes swap ldm/sgm ``CrossAttention.forward``; the stand-in's
record the active one in ``active`` (None = the unoptimised attention), which
tests read to see what the host would be running.
"""

active = None


class SdOptimization:
    name: str = None
    label: str = None
    cmd_opt: str = None
    priority: int = 0

    def title(self):
        if self.label is None:
            return self.name
        return f"{self.name} - {self.label}"

    def is_available(self):
        return True

    def apply(self):
        global active
        active = self.name

    def undo(self):
        global active
        active = None


class SdOptimizationXformers(SdOptimization):
    name = "xformers"
    cmd_opt = "xformers"
    priority = 100

    def is_available(self):
        return False


class SdOptimizationSdpNoMem(SdOptimization):
    name = "sdp-no-mem"
    label = "scaled dot product without memory efficient attention"
    cmd_opt = "opt_sdp_no_mem_attention"
    priority = 80


class SdOptimizationSdp(SdOptimizationSdpNoMem):
    name = "sdp"
    label = "scaled dot product"
    cmd_opt = "opt_sdp_attention"
    priority = 70


class SdOptimizationDoggettx(SdOptimization):
    name = "Doggettx"
    cmd_opt = "opt_split_attention"
    priority = 90


def list_optimizers(res):
    res.extend([SdOptimizationXformers(), SdOptimizationSdpNoMem(), SdOptimizationSdp(), SdOptimizationDoggettx()])
