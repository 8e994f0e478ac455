"""``comfy.sd1_clip``: prompt -> tokens (with ``embedding:NAME``) -> CLIP conditioning.

As in ComfyUI:

* ``SDTokenizer.tokenize_with_weights(text, return_word_ids=False, tokenizer_options={}, **kwargs)``
  parses ``(word:1.2)`` weights, splits the text at `` embedding:`` / ``\\nembedding:``, loads each
  named embedding with ``load_embed(name, embedding_directory, embedding_size, embed_key)`` (a
  file ``NAME``, ``NAME.safetensors``, ``.pt`` or ``.bin`` inside the folders; safetensors: the key
  ``embed_key`` if present, else the first tensor) and puts one tensor per vector in the token list;
  a missing one is logged as "warning, embedding:NAME does not exist, ignoring". Rows are
  ``max_length`` long: start token, tokens, end token, ``pad_token`` (the end token, or 0 when
  ``pad_with_end`` is false).
* ``SDClipModel.forward(tokens)`` takes rows of ints and tensors (``process_tokens``: ints through
  the token embedding with ``out_dtype=float32``, each tensor put in at its place), runs the
  transformer on ``embeds``, returns (z, pooled); ``layer`` "last" or "hidden" with ``layer_idx``,
  ``set_clip_options({"layer": i})`` / ``reset_clip_options()``.
* ``ClipTokenWeightEncoder.encode_token_weights(pairs)`` encodes the rows of one prompt and
  concatenates them along the token axis (weights against an empty prompt).
* ``SD1ClipModel`` holds the ``SDClipModel`` as ``clip_l``; ``SD1Tokenizer`` the tokenizer as ``clip_l``.

The vocabulary is the CLIP BPE one the project's tests use (ComfyUI ships the same files).
"""

import logging
import numbers
import os
import re

import torch

import comfy.clip_model
import comfy.ops
from comfy import model_management

#: The real CLIP-L text config (ComfyUI's sd1_clip_config.json); tests shrink it through model_options.
SD1_CLIP_CONFIG = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                   "max_position_embeddings": 77, "hidden_act": "quick_gelu", "eos_token_id": 49407,
                   "projection_dim": 768}


def gen_empty_tokens(special_tokens, length):
    output = [t for t in (special_tokens.get("start"), special_tokens.get("end")) if t is not None]
    return output + [special_tokens.get("pad")] * (length - len(output))


class ClipTokenWeightEncoder:
    def encode_token_weights(self, token_weight_pairs):
        to_encode, max_length, has_weights = [], 0, False
        for pairs in token_weight_pairs:
            tokens = [pair[0] for pair in pairs]
            max_length = max(len(tokens), max_length)
            has_weights = has_weights or not all(pair[1] == 1.0 for pair in pairs)
            to_encode.append(tokens)
        sections = len(to_encode)
        if has_weights or sections == 0:
            to_encode.append(gen_empty_tokens(self.special_tokens, max_length))
        out, pooled = self.encode(to_encode)[:2]
        first_pooled = pooled[0:1].to(model_management.intermediate_device()) if pooled is not None else None
        output = []
        for k in range(sections):
            z = out[k:k + 1]
            if has_weights:
                empty = out[-1]
                for i in range(len(z)):
                    for j in range(len(z[i])):
                        weight = token_weight_pairs[k][j][1]
                        if weight != 1.0:
                            z[i][j] = (z[i][j] - empty[j]) * weight + empty[j]
            output.append(z)
        if not output:
            return out[-1:].to(model_management.intermediate_device()), first_pooled
        return torch.cat(output, dim=-2).to(model_management.intermediate_device()), first_pooled


class SDClipModel(torch.nn.Module, ClipTokenWeightEncoder):
    LAYERS = ["last", "pooled", "hidden", "all"]

    def __init__(self, device="cpu", max_length=77, freeze=True, layer="last", layer_idx=None,
                 textmodel_json_config=None, dtype=None, model_class=comfy.clip_model.CLIPTextModel,
                 special_tokens={"start": 49406, "end": 49407, "pad": 49407}, layer_norm_hidden_state=True,
                 enable_attention_masks=False, zero_out_masked=False, return_projected_pooled=True,
                 return_attention_masks=False, model_options={}):
        super().__init__()
        if textmodel_json_config is None:
            textmodel_json_config = SD1_CLIP_CONFIG
            if "model_name" not in model_options:
                model_options = {**model_options, "model_name": "clip_l"}
        config = dict(textmodel_json_config)
        config.update(model_options.get("{}_model_config".format(model_options.get("model_name", "")), {}))
        self.operations = model_options.get("custom_operations", None) or comfy.ops.manual_cast
        self.transformer = model_class(config, dtype, device, self.operations)
        self.num_layers = self.transformer.num_layers
        self.max_length = max_length
        if freeze:
            self.freeze()
        self.layer = layer
        self.layer_idx = None
        self.special_tokens = special_tokens
        self.logit_scale = torch.nn.Parameter(torch.tensor(4.6055))
        self.layer_norm_hidden_state = layer_norm_hidden_state
        self.return_projected_pooled = return_projected_pooled
        if layer == "hidden":
            self.set_clip_options({"layer": layer_idx})
        self.options_default = (self.layer, self.layer_idx, self.return_projected_pooled)

    def freeze(self):
        self.transformer = self.transformer.eval()
        for param in self.parameters():
            param.requires_grad = False

    def set_clip_options(self, options):
        layer_idx = options.get("layer", self.layer_idx)
        self.return_projected_pooled = options.get("projected_pooled", self.return_projected_pooled)
        if layer_idx is None or abs(layer_idx) > self.num_layers:
            self.layer = "last"
        else:
            self.layer = "hidden"
            self.layer_idx = layer_idx

    def reset_clip_options(self):
        self.layer, self.layer_idx, self.return_projected_pooled = self.options_default

    def process_tokens(self, tokens, device):
        end_token = self.special_tokens.get("end", None)
        compare = self.special_tokens.get("pad", -1) if end_token is None else end_token
        embeds_out, num_tokens = [], []
        for row in tokens:
            mask, ints, others, eos = [], [], [], False
            for index, token in enumerate(row):
                if isinstance(token, numbers.Integral):
                    mask.append(0 if eos else 1)
                    ints.append(int(token))
                    if not eos and int(token) == compare:
                        eos = True
                else:
                    others.append((index, token))
            embeds = self.transformer.get_input_embeddings()(torch.tensor([ints], device=device, dtype=torch.long),
                                                             out_dtype=torch.float32)
            shift = 0
            for index, vector in others:
                vector = vector.view(1, -1, vector.shape[-1]).to(device=device, dtype=torch.float32)
                if vector.shape[-1] != embeds.shape[-1]:
                    logging.warning("WARNING: shape mismatch when trying to apply embedding, embedding will be "
                                    "ignored {} != {}".format(vector.shape[-1], embeds.shape[-1]))
                    shift -= 1
                    continue
                at = index + shift
                embeds = torch.cat([embeds[:, :at], vector, embeds[:, at:]], dim=1)
                mask = mask[:at] + [1] * vector.shape[1] + mask[at:]
                shift += vector.shape[1] - 1
            embeds_out.append(embeds)
            num_tokens.append(sum(mask))
        return torch.cat(embeds_out), num_tokens

    def forward(self, tokens):
        device = self.transformer.get_input_embeddings().weight.device
        embeds, num_tokens = self.process_tokens(tokens, device)
        outputs = self.transformer(None, None, embeds=embeds, num_tokens=num_tokens,
                                   intermediate_output=None if self.layer == "last" else self.layer_idx,
                                   final_layer_norm_intermediate=self.layer_norm_hidden_state, dtype=torch.float32)
        z = outputs[0].float() if self.layer == "last" else outputs[1].float()
        pooled = outputs[2].float() if self.return_projected_pooled else outputs[3].float()
        return z, pooled

    def encode(self, tokens):
        return self(tokens)

    def load_sd(self, sd):
        return self.transformer.load_state_dict(sd, strict=False)


def parse_parentheses(text):
    result, current, depth = [], "", 0
    for char in text:
        if char == "(":
            if depth == 0 and current:
                result.append(current)
                current = ""
            current += char
            depth += 1
        elif char == ")":
            depth -= 1
            current += char
            if depth == 0:
                result.append(current)
                current = ""
        else:
            current += char
    if current:
        result.append(current)
    return result


def token_weights(text, current_weight):
    out = []
    for part in parse_parentheses(text):
        weight = current_weight
        if len(part) >= 2 and part[0] == "(" and part[-1] == ")":
            part = part[1:-1]
            colon = part.rfind(":")
            weight *= 1.1
            if colon > 0:
                try:
                    weight = float(part[colon + 1:])
                    part = part[:colon]
                except ValueError:
                    pass
            out += token_weights(part, weight)
        else:
            out.append((part, current_weight))
    return out


def escape_important(text):
    return text.replace("\\)", "\0\1").replace("\\(", "\0\2")


def unescape_important(text):
    return text.replace("\0\1", ")").replace("\0\2", "(")


def load_embed(embedding_name, embedding_directory, embedding_size, embed_key=None):
    if isinstance(embedding_directory, str):
        embedding_directory = [embedding_directory]
    found = None
    for folder in embedding_directory:
        folder = os.path.abspath(folder)
        path = os.path.abspath(os.path.join(folder, embedding_name))
        if os.path.commonpath((folder, path)) != folder:
            continue
        if os.path.isfile(path):
            found = path
        else:
            found = next((path + ext for ext in (".safetensors", ".pt", ".bin") if os.path.isfile(path + ext)), None)
        if found is not None:
            break
    if found is None:
        return None
    if not found.lower().endswith(".safetensors"):
        raise NotImplementedError("the stand-in reads .safetensors embeddings only")
    import safetensors.torch

    embed = safetensors.torch.load_file(found, device="cpu")
    if embed_key is not None and embed_key in embed:
        return embed[embed_key]
    return next(iter(embed.values()))


class SDTokenizer:
    def __init__(self, tokenizer_path=None, max_length=77, pad_with_end=True, embedding_directory=None,
                 embedding_size=768, embedding_key="clip_l", tokenizer_class=None, has_start_token=True,
                 has_end_token=True, pad_to_max_length=True, min_length=None, pad_token=None, end_token=None,
                 min_padding=None, tokenizer_data={}, tokenizer_args={}):
        if tokenizer_class is None:
            from transformers import CLIPTokenizer as tokenizer_class
        if tokenizer_path is None:
            from celebbasis_ext.clip_tokenizer import tokenizer_files_dir

            tokenizer_path = str(tokenizer_files_dir())  # ComfyUI: its bundled sd1_tokenizer folder
        self.tokenizer = tokenizer_class.from_pretrained(tokenizer_path, **tokenizer_args)
        self.max_length = tokenizer_data.get("{}_max_length".format(embedding_key), max_length)
        self.min_length = min_length
        empty = self.tokenizer("")["input_ids"]
        self.tokenizer_adds_end_token = has_end_token
        self.tokens_start = 1 if has_start_token else 0
        self.start_token = empty[0] if has_start_token else None
        self.end_token = end_token if end_token is not None else (empty[1] if has_end_token else None)
        self.pad_token = pad_token if pad_token is not None else (self.end_token if pad_with_end else 0)
        self.pad_with_end = pad_with_end
        self.pad_to_max_length = pad_to_max_length
        self.embedding_directory = embedding_directory
        self.max_word_length = 8
        self.embedding_identifier = "embedding:"
        self.embedding_size = embedding_size
        self.embedding_key = embedding_key

    def _try_get_embedding(self, embedding_name):
        parts = embedding_name.split()
        name, leftover = parts[0], " ".join(parts[1:])
        embed = load_embed(name, self.embedding_directory, self.embedding_size, self.embedding_key)
        if embed is None:
            stripped = name.strip(",")
            if len(stripped) < len(name):
                embed = load_embed(stripped, self.embedding_directory, self.embedding_size, self.embedding_key)
                return embed, "{} {}".format(name[len(stripped):], leftover)
        return embed, leftover

    def tokenize_with_weights(self, text, return_word_ids=False, tokenizer_options={}, **kwargs):
        text = escape_important(text)
        parsed = [(text, 1.0)] if kwargs.get("disable_weights", False) else token_weights(text, 1.0)
        groups = []
        for segment, weight in parsed:
            split = re.split(" {0}|\n{0}".format(self.embedding_identifier), unescape_important(segment))
            words = [split[0]] + [self.embedding_identifier + rest for rest in split[1:]]
            for word in [w for w in words if w != ""]:
                if word.startswith(self.embedding_identifier) and self.embedding_directory is not None:
                    name = word[len(self.embedding_identifier):].strip("\n")
                    embed, leftover = self._try_get_embedding(name)
                    if embed is None:
                        logging.warning(f"warning, embedding:{name} does not exist, ignoring")
                    elif embed.dim() == 1:
                        groups.append([(embed, weight)])
                    else:
                        groups.append([(embed[row], weight) for row in range(embed.shape[0])])
                    if leftover == "":
                        continue
                    word = leftover
                end = -1 if self.tokenizer_adds_end_token else None
                groups.append([(t, weight) for t in self.tokenizer(word)["input_ids"][self.tokens_start:end]])
        has_end = 1 if self.end_token is not None else 0
        batches, batch = [], []
        if self.start_token is not None:
            batch.append((self.start_token, 1.0, 0))
        batches.append(batch)
        for word_id, group in enumerate(groups, 1):
            large = len(group) >= self.max_word_length
            while group:
                if len(group) + len(batch) > self.max_length - has_end:
                    remaining = self.max_length - len(batch) - has_end
                    if large:
                        batch.extend([(t, w, word_id) for t, w in group[:remaining]])
                        group = group[remaining:]
                        if self.end_token is not None:
                            batch.append((self.end_token, 1.0, 0))
                    else:
                        if self.end_token is not None:
                            batch.append((self.end_token, 1.0, 0))
                        if self.pad_to_max_length:
                            batch.extend([(self.pad_token, 1.0, 0)] * remaining)
                    batch = [] if self.start_token is None else [(self.start_token, 1.0, 0)]
                    batches.append(batch)
                else:
                    batch.extend([(t, w, word_id) for t, w in group])
                    group = []
        if self.end_token is not None:
            batch.append((self.end_token, 1.0, 0))
        if self.pad_to_max_length and len(batch) < self.max_length:
            batch.extend([(self.pad_token, 1.0, 0)] * (self.max_length - len(batch)))
        if not return_word_ids:
            batches = [[(t, w) for t, w, _ in row] for row in batches]
        return batches

    def state_dict(self):
        return {}


class SD1Tokenizer:
    def __init__(self, embedding_directory=None, tokenizer_data={}, clip_name="l", tokenizer=SDTokenizer, name=None):
        self.clip_name = name if name is not None else clip_name
        self.clip = name if name is not None else "clip_{}".format(clip_name)
        setattr(self, self.clip, tokenizer(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data))

    def tokenize_with_weights(self, text, return_word_ids=False, **kwargs):
        return {self.clip_name: getattr(self, self.clip).tokenize_with_weights(text, return_word_ids, **kwargs)}

    def state_dict(self):
        return {}


class SD1CheckpointClipModel(SDClipModel):
    def __init__(self, device="cpu", dtype=None, model_options={}):
        super().__init__(device=device, return_projected_pooled=False, dtype=dtype, model_options=model_options)


class SD1ClipModel(torch.nn.Module):
    def __init__(self, device="cpu", dtype=None, model_options={}, clip_name="l", clip_model=SD1CheckpointClipModel,
                 name=None, **kwargs):
        super().__init__()
        self.clip_name = name if name is not None else clip_name
        self.clip = name if name is not None else "clip_{}".format(clip_name)
        model_options = {**model_options, "model_name": self.clip}
        setattr(self, self.clip, clip_model(device=device, dtype=dtype, model_options=model_options, **kwargs))
        self.dtypes = {dtype} if dtype is not None else set()

    def set_clip_options(self, options):
        getattr(self, self.clip).set_clip_options(options)

    def reset_clip_options(self):
        getattr(self, self.clip).reset_clip_options()

    def encode_token_weights(self, token_weight_pairs):
        return getattr(self, self.clip).encode_token_weights(token_weight_pairs[self.clip_name])

    def load_sd(self, sd):
        return getattr(self, self.clip).load_sd(sd)
