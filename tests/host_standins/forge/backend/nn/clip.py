"""``backend.nn.clip``: ``IntegratedCLIP`` = an HF ``CLIPTextModel`` at ``.transformer`` plus ``logit_scale``,
with a ``text_projection`` Linear added on the transformer (used for CLIP-G's pooled output).

transformers 5's ``CLIPTextModel`` has no ``text_model`` level; ``CLIPTextModelCompat``
has one under either version, so the layout is the one Forge (transformers 4.46 / 4.57) has:
``transformer.text_model.embeddings.token_embedding``.
"""

import torch


class CLIPTextModelCompat(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        from transformers import CLIPTextModel

        self.config = config
        model = CLIPTextModel(config)
        self.text_model = getattr(model, "text_model", model)  # 4.x nests it already; 5.x does not

    def forward(self, input_ids, output_hidden_states=False, **kwargs):
        return self.text_model(input_ids=input_ids, output_hidden_states=output_hidden_states, **kwargs)


class IntegratedCLIP(torch.nn.Module):
    def __init__(self, cls, config, add_text_projection=False):
        super().__init__()
        self.transformer = cls(config)
        self.logit_scale = torch.nn.Parameter(torch.tensor(4.6055))
        if add_text_projection:
            self.transformer.text_projection = torch.nn.Linear(config.hidden_size, config.hidden_size, bias=False)
