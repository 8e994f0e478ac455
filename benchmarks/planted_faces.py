"""Planted faces: a tiny SD1 that draws six known basis codes as six real face photos.

The toy world of ``planted_identity.py`` paints latent quadrants, so nothing a
face model can judge comes out of it, and it never met the training views
users get (it tunes with ``augment=False``). This world renders faces:

1. Six people from insightface's group photo ``t1.jpg`` (it ships inside the
   insightface package), each cut out in his or her own framing: a square
   around the face, 1.8 face boxes wide, with hair, neck and a little of the
   room and the neighbours. Those crops are the users' photos (``photos``,
   256 px colour); the world draws them as 64 px grey pictures (``targets``).
2. A lossless codec stands in for the VAE (a random VAE is no autoencoder): a
   64x64 grey picture is cut into 2x2 pixel cells and each cell stored as its
   four Haar coefficients (mean, horizontal, vertical, diagonal detail), so a
   4x32x32 latent decodes to a real-looking 64 px face and back without loss.
   It is an ``nn.Module`` with a VAE's ``encode``/``decode``, installed as the
   pipeline's ``vae``: the diffusers pipeline, the adapter and the tuning
   engine use it unchanged.
3. A tiny model of SD1's architecture (CLIP text encoder -> cross-attention
   UNet) with SD 2's v-prediction objective, whose UNet alone is taught, on six
   planted codes (2 x K coefficients in the celeb basis, unit norm per token,
   spliced into the caption templates the engine tunes with), to draw code i
   as person i. A steering prompt ("a negative photo of {}") is taught to draw
   the inverted picture, so that a learned token can be checked for still
   following its prompt. Renders are DDIM with 4 trailing steps.
4. Two framings. ``"photo"`` (world A): each person only in the photo's own
   framing, never on black. ``"mixed"`` (world B): world A taught further so
   that 35% of its views show the person's head small (40-55% of the canvas)
   on black, at one of three places, as the authors' training views show it
   (theirs at any place). Those views carry the engine's two "small" captions
   ("a photo of a small {}", "a photo of the small {}"); every other caption,
   "a photo of {}" among them, keeps the photo's framing.

How a world is taught is its ``Recipe``: ``FULL`` (the study: six people,
every caption the engine tunes with), ``FULL_MIXED`` (world B's further
teaching) or ``QUICK`` (the tests' session fixture, built on every fresh CI
machine: fewer people, one caption, and teaching only at the timesteps
renders use).

Renders are judged by dlib's face recogniser (the project's own encoder) and
by pixel distance. See ``benchmarks/views_study.py`` for what is measured on
it; ``tests/test_planted_faces.py`` checks the world itself.

Usage::

    PYTHONPATH=. python benchmarks/planted_faces.py [--framing photo|mixed] [--quick] [--seed 0] [--save DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from celebbasis_ext.architectures import build_pipeline  # noqa: E402
from celebbasis_ext.basis import basis_for  # noqa: E402
from celebbasis_ext.diffusers_adapter import DiffusersAdapter  # noqa: E402
from celebbasis_ext.tuning import TEMPLATES  # noqa: E402

FRAMINGS = ("photo", "mixed")
NAMES = (
    "Tom Hanks", "Emma Stone", "Jackie Chan", "Brad Pitt", "Angelina Jolie", "Will Smith",
    "Meryl Streep", "Denzel Washington", "Natalie Portman", "Keanu Reeves", "Scarlett Johansson",
    "Morgan Freeman",
)
STEER_PROMPT = "a negative photo of {}"
"""Taught to draw the inverted picture: the prompt a learned token must still follow."""

SIZE = 64
"""Rendered pictures are SIZE x SIZE grey: dlib finds and tells apart all six people in their 64 px
grey photos (not at 48 px), but a few percent of pixel noise already hides a face from it."""

PHOTO_SIZE = 256
FRAME_FACES = 1.8
"""A framing's side in face-box widths (dlib's box: brows to chin)."""

PREDICTION = "v_prediction"
"""SD1's architecture with SD 2's v-prediction objective: an epsilon model this small never learns
to draw from its text in minutes (``planted_identity.py`` found the same for its toy world)."""


@dataclass(frozen=True)
class Recipe:
    """How a world is taught and rendered: everything besides the seed and framing that decides it."""

    people: tuple = (0, 1, 2, 3, 4, 5)  # which of t1.jpg's six people (left to right) are planted
    templates: tuple = TEMPLATES  # the captions code i is taught in (plus STEER_PROMPT)
    steps: int = 2000
    batch: int = 12
    lr: float = 3e-3
    render_steps: int = 4  # DDIM, trailing
    render_share: float = 0.5
    """Share of teaching views at the timesteps renders use: they decide what a render looks like. The
    rest are uniform over all timesteps, as tuning draws them."""
    decay_share: float = 0.3  # the learning rate is held, then decays (cosine) over this share of the steps
    black_share: float = 0.0
    """Share of views (besides the steering prompt's) that show the head small on black, with a
    "small" caption: 0 for world A, BLACK_SHARE for world B."""
    after: Optional["Recipe"] = None
    """The world A recipe whose taught UNet (same seed and people) this one starts from; None: from
    scratch."""


FULL = Recipe()
"""World A, the study's: six people in every caption the engine tunes with, 2000 steps."""

QUICK = Recipe(people=(0, 3, 5), templates=("a photo of {}",), steps=800, batch=12, render_share=1.0,
               decay_share=0.6)
"""The tests' world, built on every fresh CI machine: three people, one caption, taught only at the
render timesteps, 800 steps: 4.5-5.5 minutes on this busy 2-core machine (one thread, beside other
jobs), about 3 on a quiet thread. Of the six, dlib finds 0, 3 and 5 most surely in their 64 px grey
pictures (detector scores 2.3, 1.3, 2.6; 1 and 2 only 0.5 and 0.7), and they are the least alike.
Measured on it: dlib finds a face in 9 of 9 renders (seeds 11-13) and names every person right
(margins 0.04, 0.05, 0.02 in dlib cosine). With fewer steps it did not hold: after 500-600 steps
dlib found no face in some runs, and the first three people at 800 steps gave 6 of 9 faces."""

WEIGHT_EMA = 0.99
STEER_SHARE = 0.25
BLACK_SHARE = 0.35
SMALL_WORD = " small "
"""World B's views on black carry the captions with this word ("a photo of a small {}")."""
SMALL_PROMPT = "a photo of a small {}"
"""World B draws the head small on black for this prompt."""
BLACK_PLACEMENTS = ((0.55, 0.5, 0.5), (0.4, 0.5, 0.55), (0.4, 0.3, 0.3))
"""World B's heads on black: (share of the side, centre x, centre y), one drawn at random per view."""

FULL_MIXED = Recipe(steps=1000, black_share=BLACK_SHARE, after=FULL)
"""World B: world A (``FULL``, same seed) taught 1000 steps more with 35% of its views on black.

Measured on it (seed 0, 248 s on one thread): for "a photo of {}" dlib finds a face in 18 of 18
renders and names all six people right; "a photo of a small {}" draws a head on black, at a place
that changes with the seed, blurred and much alike from person to person (a 64 px world's heads
that small carry little of who they are); the steering prompt still inverts.

Taught from scratch, 2000 steps, world B never drew a face dlib finds; its renders were blurred
faces, always in the photo's framing. Tried: the head on black for every third caption (10 of 29,
each 2.6% of the views: the tiny CLIP's contexts differ by 14% of their spread from caption to
caption, and the UNet never told those captions apart); on black for 35% of all views whatever
the caption; the codec's gain halved (renders speckled; at a 3e-3 learning rate it diverged).
From world A's sharp faces, with two captions of its own for the views on black, it learns the
second framing and keeps the first; at a 1e-3 learning rate it learned it only in part."""
QUICK_MIXED = Recipe(people=QUICK.people, templates=("a photo of {}", SMALL_PROMPT), steps=300,
                     render_share=1.0, decay_share=0.6, black_share=BLACK_SHARE, after=QUICK)
"""World B for smoke runs (``views_study.py --quick``): QUICK's world taught further."""
WORLD_VERSION = "1"
"""Bump when teaching changes: cached worlds are keyed by it."""


# -- the codec -------------------------------------------------------------------------------------

def _codec_class():
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.models.modeling_utils import ModelMixin

    class LumaCodec(ModelMixin, ConfigMixin):
        """A lossless VAE stand-in: grey pixels, each 2x2 cell as its 4 Haar coefficients (orthonormal).

        Channel 0 is the cell's mean (a 32x32 thumbnail of the face), 1-3 its
        horizontal, vertical and diagonal detail, small where the picture is
        smooth: like a real VAE's latents, the channels are decorrelated, so
        a denoiser that gets the detail slightly wrong draws a softer face,
        not speckle. ``block_out_channels`` has two entries so that diffusers
        computes a ``vae_scale_factor`` of 2 from it, as for a real VAE.
        """

        @register_to_config
        def __init__(self, latent_channels: int = 4, block_out_channels: Sequence[int] = (1, 1),
                     scaling_factor: float = 1.0, gain: float = 1.0):
            super().__init__()
            haar = torch.tensor([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]) / 2.0
            self.register_buffer("haar", haar, persistent=False)  # rows: cell pixels (tl, tr, bl, br) -> bands

        def encode(self, pixels: torch.Tensor, return_dict: bool = True):
            luma = 0.299 * pixels[:, 0:1] + 0.587 * pixels[:, 1:2] + 0.114 * pixels[:, 2:3]
            cells = F.pixel_unshuffle(luma.float(), 2)  # (B, 4, h, w): tl, tr, bl, br
            latents = torch.einsum("ij,bjhw->bihw", self.haar.float(), cells) * self.config.gain
            return _Encoded(latents.to(pixels.dtype))

        def decode(self, latents: torch.Tensor, return_dict: bool = True, generator=None):
            from diffusers.models.autoencoders.vae import DecoderOutput

            cells = torch.einsum("ji,bjhw->bihw", self.haar.float(), latents.float() / self.config.gain)
            image = F.pixel_shuffle(cells, 2).clamp(-1, 1).expand(-1, 3, -1, -1).to(latents.dtype)
            return DecoderOutput(sample=image) if return_dict else (image,)

    return LumaCodec


class _Latents:
    def __init__(self, latents):
        self.mean = latents

    def sample(self, generator=None):
        return self.mean

    def mode(self):
        return self.mean


class _Encoded:
    def __init__(self, latents):
        self.latent_dist = _Latents(latents)

    def __getitem__(self, index):
        return self.latent_dist if index == 0 else None


def pixels(image) -> torch.Tensor:
    """PIL image -> (3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1


def grey(image, size: int = SIZE):
    from PIL import Image

    return image.convert("L").resize((size, size), Image.Resampling.LANCZOS).convert("RGB")


def face_feature(image, encoder) -> Optional[np.ndarray]:
    """The unit identity feature of the largest face in ``image``, or None when there is none."""
    array = np.asarray(image.convert("RGB"))
    faces = encoder.detect(array)
    if not faces:
        return None
    face = max(faces, key=lambda found: found.area)
    feature = np.asarray(encoder.embed(array, face), dtype=np.float64)
    return feature / max(np.linalg.norm(feature), 1e-12)


# -- the photos ------------------------------------------------------------------------------------

def source_photos(size: int = PHOTO_SIZE) -> list:
    """The six people of insightface's t1.jpg, each in a square of their own framing, left to right."""
    import insightface
    from PIL import Image

    from celebbasis_ext.face.encoders import load_face_encoder

    path = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    image = Image.open(path).convert("RGB")
    faces = load_face_encoder("dlib").detect(np.asarray(image))
    faces = sorted(faces, key=lambda face: face.box[0])
    photos = []
    for face in faces:
        x0, y0, x1, y1 = face.box
        side = FRAME_FACES * max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + 0.1 * (y1 - y0)  # a little below the box: room for shoulders
        left = min(max(cx - side / 2, 0), image.width - side)
        top = min(max(cy - side / 2, 0), image.height - side)
        box = tuple(int(round(v)) for v in (left, top, left + side, top + side))
        photos.append(image.crop(box).resize((size, size), Image.Resampling.LANCZOS))
    return photos


# -- the world -------------------------------------------------------------------------------------

class FaceWorldAdapter(DiffusersAdapter):
    """The diffusers adapter on the world's pipeline (its ``vae`` is the codec): nothing changed."""


@dataclass
class FaceWorld:
    """A taught model with six planted people; see the module docstring."""

    adapter: FaceWorldAdapter
    basis: object
    codes: torch.Tensor  # (n, 2, K) planted coefficients, unit norm per token
    photos: list  # users' photos (PIL, colour, PHOTO_SIZE): photos[i] is the picture identity i renders as
    targets: list = field(default_factory=list)  # what the world draws for code i (PIL, SIZE, grey)
    framing: str = "photo"
    seed: int = 0
    recipe: Recipe = FULL
    teach_losses: list = field(default_factory=list)
    teach_seconds: float = 0.0
    _references: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def pipe(self):
        return self.adapter.pipe

    @property
    def judge(self):
        """dlib's face encoder (the project's own), loaded once: what renders are judged by."""
        from celebbasis_ext.face.encoders import load_face_encoder

        return load_face_encoder("dlib")

    @property
    def references(self) -> np.ndarray:
        """(n, 128) dlib features of the photos' faces: the likeness references."""
        if self._references is None:
            features = []
            for photo in self.photos:
                feature = face_feature(photo, self.judge)
                if feature is None:
                    raise RuntimeError("dlib found no face in a planted photo")
                features.append(feature)
            self._references = np.stack(features)
        return self._references

    def likeness(self, images: Sequence) -> np.ndarray:
        """(len(images), n): cosine of each image's largest face to each person's photo; NaN where no face."""
        table = np.full((len(images), len(self.photos)), np.nan)
        for row, image in enumerate(images):
            feature = face_feature(image, self.judge)
            if feature is not None:
                table[row] = self.references @ feature
        return table

    def embedding(self, coefficients: torch.Tensor) -> torch.Tensor:
        """(2, W) vectors from (2, K) coefficients (each token normalised, as tuning does)."""
        return self.basis.embed(F.normalize(coefficients.float(), dim=-1))

    @torch.no_grad()
    def render(self, coefficients_or_vectors: torch.Tensor, seeds: Sequence[int],
               prompt: str = "a photo of {}") -> list:
        """DDIM renders (PIL, SIZE x SIZE) of the token in ``prompt``, one per seed, decoded by the codec."""
        value = coefficients_or_vectors.float()
        vectors = self.embedding(value) if value.shape[-1] == self.basis.k else value
        context = self.adapter.encode_prompts([prompt], vectors)["context"]
        result = self.pipe(prompt_embeds=context.expand(len(seeds), -1, -1),
                           num_inference_steps=self.recipe.render_steps, guidance_scale=1.0, height=SIZE, width=SIZE,
                           generator=[torch.Generator().manual_seed(int(seed)) for seed in seeds])
        return list(result.images)


def _build_pipe(seed: int):
    """tiny-sd1's text encoder and tokenizer, a UNet for 32x32 latents, and the codec as its VAE."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from diffusers import DDIMScheduler

    base = build_pipeline("tiny-sd1", seed=seed)
    base.scheduler = DDIMScheduler.from_config(base.scheduler.config, prediction_type=PREDICTION,
                                               timestep_spacing="trailing")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=SIZE // 2, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32, 64), norm_num_groups=8, attention_head_dim=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=base.text_encoder.config.hidden_size,
    )
    pipe = StableDiffusionPipeline(
        vae=_codec_class()(), text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=unet,
        scheduler=base.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def small_captions(templates: Sequence[str]) -> list:
    """World B: the indices of the captions its heads on black are taught with."""
    return [index for index, text in enumerate(templates) if SMALL_WORD in text]


def _on_black(picture: torch.Tensor, placement: tuple) -> torch.Tensor:
    """The picture's centre (the head) small on black at ``placement``; pixels in [-1, 1]."""
    size = picture.shape[-1]
    head = picture[..., size // 8: size - size // 8, size // 8: size - size // 8]
    scale, x, y = placement
    side = max(8, int(round(size * scale)))
    small = F.interpolate(head[None], size=(side, side), mode="bilinear", antialias=True, align_corners=False)[0]
    canvas = torch.full_like(picture, -1.0)
    top, left = int(round(y * size - side / 2)), int(round(x * size - side / 2))
    canvas[..., top: top + side, left: left + side] = small
    return canvas


def teach(world: FaceWorld, log=print, probe=None, probe_every: int = 100) -> list:
    """Train the UNet (only) to draw code i as target i for every template, and the inverse for STEER_PROMPT.

    ``probe(world)``, when given, is called every ``probe_every`` steps and its text logged.
    """
    adapter, basis, pipe = world.adapter, world.basis, world.pipe
    recipe = world.recipe
    steps, batch, lr = recipe.steps, recipe.batch, recipe.lr
    generator = torch.Generator().manual_seed(world.seed + 1)
    templates = list(recipe.templates) + [STEER_PROMPT]
    steer = len(templates) - 1
    count = len(world.codes)
    with torch.no_grad():
        embeddings = world.embedding(world.codes)
        contexts = torch.stack([
            adapter.encode_prompts(templates, embeddings[i])["context"] for i in range(count)])  # (n, T, 77, W)
        pictures = torch.stack([pixels(t) for t in world.targets])  # (n, 3, SIZE, SIZE)
        clean = adapter.encode_images(pictures)  # (n, 4, SIZE / 2, SIZE / 2)
        # world B: every person's head small on black, at each placement: (placements, n, 4, h, w)
        on_black = torch.stack([
            adapter.encode_images(torch.stack([_on_black(picture, placement) for picture in pictures]))
            for placement in BLACK_PLACEMENTS]) if recipe.black_share else None
    small = torch.tensor(small_captions(templates[:steer]), dtype=torch.long)
    large = torch.tensor([index for index in range(steer) if index not in small.tolist()], dtype=torch.long)
    if on_black is not None and not len(small):
        raise ValueError("a world with heads on black needs a caption with the word 'small' among its templates")
    alphas = adapter.alphas_cumprod()
    pipe.scheduler.set_timesteps(recipe.render_steps)
    render_t = pipe.scheduler.timesteps.clone().long()
    unet = pipe.unet
    unet.train()
    unet.requires_grad_(True)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    # the result is an exponential moving average of the weights: cleaner renders than the last step's
    averaged = [p.detach().clone() for p in unet.parameters()]
    # warm up, hold, then a cosine decay over the last DECAY_SHARE of the steps
    hold = int(steps * (1 - recipe.decay_share))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 20) * (
        1.0 if step < hold else 0.5 * (1 + math.cos(math.pi * (step - hold) / max(1, steps - hold)))))
    losses = []
    try:
        for _ in range(steps):
            # every person in every batch (a shuffled round when the batch is larger)
            picks = torch.cat([torch.randperm(count, generator=generator)
                               for _ in range(-(-batch // count))])[:batch]
            template = torch.randint(0, len(templates), (batch,), generator=generator)
            # a quarter of the views use the steering prompt
            template = torch.where(torch.rand(batch, generator=generator) < STEER_SHARE, steer, template % steer)
            latents = clean[picks].clone()
            if on_black is not None:
                # world B: a share of the other views is the head on black, with a "small" caption;
                # the rest keep the photo's framing and never carry one
                black = (torch.rand(batch, generator=generator) < recipe.black_share) & (template != steer)
                placement = torch.randint(0, len(BLACK_PLACEMENTS), (batch,), generator=generator)
                template = torch.where(
                    black, small[torch.randint(0, len(small), (batch,), generator=generator)],
                    torch.where(template == steer, steer, large[torch.randint(0, len(large), (batch,),
                                                                              generator=generator)]))
                latents[black] = on_black[placement[black], picks[black]]
            inverted = template == steer
            latents[inverted] = -latents[inverted]
            t = torch.randint(0, alphas.shape[0], (batch,), generator=generator)
            on_render = torch.rand(batch, generator=generator) < recipe.render_share
            t = torch.where(on_render, render_t[torch.randint(0, len(render_t), (batch,), generator=generator)], t)
            noise = torch.randn(latents.shape, generator=generator)
            alpha = alphas[t].view(-1, 1, 1, 1)
            noisy = alpha.sqrt() * latents + (1 - alpha).sqrt() * noise
            prediction = unet(noisy, t, encoder_hidden_states=contexts[picks, template]).sample
            target = alpha.sqrt() * noise - (1 - alpha).sqrt() * latents  # v
            loss = F.mse_loss(prediction, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                torch._foreach_lerp_(averaged, [p.detach() for p in unet.parameters()], 1 - WEIGHT_EMA)
            losses.append(loss.item())
            if probe is not None and len(losses) % probe_every == 0:
                current = [p.detach().clone() for p in unet.parameters()]
                _load_weights(unet, averaged)
                unet.eval()
                log(f"  teaching step {len(losses)}: loss {np.mean(losses[-probe_every:]):.4f}, {probe(world)}")
                unet.train()
                _load_weights(unet, current)
        _load_weights(unet, averaged)
    finally:
        unet.requires_grad_(False)
        unet.eval()
    return losses


@torch.no_grad()
def _load_weights(module: torch.nn.Module, values: Sequence[torch.Tensor]) -> None:
    for parameter, value in zip(module.parameters(), values):
        parameter.copy_(value)


def build_face_world(seed: int = 0, framing: str = "photo", quick: bool = False, log=print,
                     cache_dir=None, probe=None, recipe: Optional[Recipe] = None) -> FaceWorld:
    """The world: photos, codec, tiny SD1, basis, the planted codes, and the UNet taught to draw them.

    ``recipe`` says how it is taught (default ``QUICK`` when ``quick``, else
    ``FULL``; for world B ``QUICK_MIXED`` or ``FULL_MIXED``, taught further from
    world A's ``QUICK`` or ``FULL`` of the same seed, built or loaded first). A
    taught UNet is kept in ``cache_dir`` (default: none) under a key of
    everything that decides it, so a second build only loads it.
    """
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}, not {framing!r}")
    started = time.perf_counter()
    mixed = framing == "mixed"
    recipe = recipe or ((QUICK_MIXED if mixed else QUICK) if quick else (FULL_MIXED if mixed else FULL))
    if mixed != bool(recipe.black_share):
        raise ValueError(f"framing {framing!r} needs a recipe with {'some' if mixed else 'no'} views on black "
                         f"(black_share {'> 0' if mixed else '0'}), not {recipe.black_share}")
    everyone = source_photos()
    photos = [everyone[i] for i in recipe.people]
    pipe = _build_pipe(seed)
    adapter = FaceWorldAdapter(pipe, f"planted faces ({framing})")
    with tempfile.TemporaryDirectory() as scratch:
        names_file = os.path.join(scratch, "names.txt")
        Path(names_file).write_text("\n".join(NAMES) + "\n", encoding="utf-8")
        basis = basis_for(adapter, names_file=names_file, k=8, cache_dir=os.path.join(scratch, "basis"))
    generator = torch.Generator().manual_seed(seed)
    codes = F.normalize(torch.randn(len(photos), 2, basis.k, generator=generator), dim=-1)
    world = FaceWorld(adapter, basis, codes, photos, [grey(photo) for photo in photos], framing, seed,
                      recipe)
    cached = _cache_path(cache_dir, seed, framing, recipe)
    if cached is not None and cached.is_file():
        from safetensors.torch import load_file

        pipe.unet.load_state_dict(load_file(str(cached)))
        log(f"planted faces ({framing}, seed {seed}): taught UNet loaded from {cached}")
    else:
        if recipe.after is not None:  # world B goes on from world A's taught UNet
            start = build_face_world(seed, "photo", log=log, cache_dir=cache_dir,
                                     recipe=replace(recipe.after, people=recipe.people))
            pipe.unet.load_state_dict(start.pipe.unet.state_dict())
        world.teach_losses = teach(world, log=log, probe=probe)
        log(f"planted faces ({framing}, seed {seed}): UNet taught {recipe.steps} steps, loss "
            f"{np.mean(world.teach_losses[:20]):.4f} -> {np.mean(world.teach_losses[-20:]):.4f}, "
            f"{time.perf_counter() - started:.0f} s")
        if cached is not None:
            from safetensors.torch import save_file

            cached.parent.mkdir(parents=True, exist_ok=True)
            scratch_file = cached.with_suffix(".tmp")
            save_file({key: value.contiguous() for key, value in pipe.unet.state_dict().items()}, str(scratch_file))
            os.replace(scratch_file, cached)
    world.teach_seconds = time.perf_counter() - started
    return world


def default_cache_dir() -> Path:
    """Where the benchmarks keep taught worlds: ``planted_faces`` in the project's cache folder."""
    from celebbasis_ext.clip_tokenizer import cache_dir

    return Path(cache_dir()) / "planted_faces"


def _recipe_key(recipe: Recipe) -> dict:
    # world A's keys stay what they were before world B's fields existed: their caches stay valid
    key = asdict(recipe)
    for name in ("black_share", "after"):
        if not key[name]:
            key.pop(name)
    return key


def _cache_path(cache_dir, seed: int, framing: str, recipe: Recipe) -> Optional[Path]:
    if cache_dir is None:
        return None
    import hashlib

    import diffusers

    key = json.dumps([WORLD_VERSION, seed, framing, _recipe_key(recipe), WEIGHT_EMA, STEER_SHARE,
                      BLACK_SHARE, [list(p) for p in BLACK_PLACEMENTS], FRAME_FACES, SIZE, PREDICTION,
                      torch.__version__, diffusers.__version__]
                     + ([SMALL_WORD] if recipe.black_share else []))
    return Path(cache_dir) / f"planted-faces-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--framing", default="photo", choices=FRAMINGS)
    parser.add_argument("--quick", action="store_true", help="the tests' world (QUICK), not the study's (FULL)")
    parser.add_argument("--steps", type=int, help="teaching steps")
    parser.add_argument("--no-cache", action="store_true", help="teach anew even when a taught world is cached")
    parser.add_argument("--save", help="folder for the photos, targets and renders (and the steering prompt's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    mixed = args.framing == "mixed"
    recipe = (QUICK_MIXED if mixed else QUICK) if args.quick else (FULL_MIXED if mixed else FULL)
    world = build_face_world(args.seed, args.framing, log=print,
                             recipe=replace(recipe, steps=args.steps) if args.steps else recipe,
                             cache_dir=None if args.no_cache else default_cache_dir())
    seeds = [0, 1, 2]
    for person in range(len(world.codes)):
        renders = world.render(world.codes[person], seeds)
        table = world.likeness(renders)
        seen = ~np.isnan(table[:, 0])
        if seen.any():
            likeness = table[seen].mean(axis=0)
            print(f"person {person}: dlib finds a face in {seen.sum()}/{len(seeds)} renders; their likeness to "
                  f"each photo {' '.join(f'{value:.3f}' for value in likeness)} -> "
                  f"{'right' if int(np.argmax(likeness)) == person else 'WRONG'}")
        else:
            print(f"person {person}: dlib finds no face in the renders")
        if args.save:
            folder = Path(args.save)
            folder.mkdir(parents=True, exist_ok=True)
            world.photos[person].save(folder / f"photo_{person}.png")
            world.targets[person].save(folder / f"target_{person}.png")
            for seed, image in zip(seeds, renders):
                image.save(folder / f"render_{person}_{seed}.png")
            world.render(world.codes[person], [0], STEER_PROMPT)[0].save(folder / f"steer_{person}.png")
            if world.recipe.black_share:
                world.render(world.codes[person], [0], SMALL_PROMPT)[0].save(folder / f"small_{person}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
