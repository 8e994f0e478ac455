"""modules/sd_emphasis.py: how ``(word:1.2)`` weights are applied to the CLIP output."""

from __future__ import annotations


class Emphasis:
    name: str = "Base"
    description: str = ""

    def after_transformers(self):
        pass


class EmphasisNone(Emphasis):
    name = "None"


class EmphasisIgnore(Emphasis):
    name = "Ignore"


class EmphasisOriginal(Emphasis):
    name = "Original"

    def after_transformers(self):
        original_mean = self.z.mean()
        self.z = self.z * self.multipliers.reshape(self.multipliers.shape + (1,)).expand(self.z.shape)
        new_mean = self.z.mean()
        self.z = self.z * (original_mean / new_mean)


class EmphasisOriginalNoNorm(EmphasisOriginal):
    name = "No norm"

    def after_transformers(self):
        self.z = self.z * self.multipliers.reshape(self.multipliers.shape + (1,)).expand(self.z.shape)


def get_current_option(emphasis_option_name):
    return next(iter([x for x in options if x.name == emphasis_option_name]), EmphasisOriginal)


options = [EmphasisNone, EmphasisIgnore, EmphasisOriginal, EmphasisOriginalNoNorm]
