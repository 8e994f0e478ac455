"""The CelebBasis nodes as ComfyUI declares nodes: inputs, outputs, one function each that calls ``jobs``.

Loaded at ComfyUI's start: nothing here imports torch, the engine's heavy
parts or ComfyUI (the choices come from light modules when ComfyUI asks for
them). Errors are the engine's one-line ``BadInput`` messages.
"""

from __future__ import annotations

CATEGORY = "CelebBasis"
FACE_ENCODER_CHOICES = ["auto", "insightface", "dlib"]
#: Largest seed the engine takes (ComfyUI's seed widgets go to 2**64 - 1).
MAX_SEED = 2**63 - 1


class CelebBasisTune:
    """One photo (or a batch of photos of one person) -> an embedding file usable as ``embedding:NAME``."""

    DESCRIPTION = ("Learns a two-token embedding of the person in the photos (Celeb Basis) on this checkpoint and "
                   "saves NAME.safetensors in the embeddings folder: write embedding:NAME in any CLIP Text Encode. "
                   "Connect the clip output to the text encoders that use it, so they run after the file exists.")
    CATEGORY = CATEGORY
    FUNCTION = "tune"
    RETURN_TYPES = ("STRING", "CLIP")
    RETURN_NAMES = ("name", "clip")
    OUTPUT_TOOLTIPS = ("The embedding's name: write embedding:NAME in a prompt.",
                       "The CLIP given, unchanged; text encoders connected to it run after tuning.")
    OUTPUT_NODE = True  # it writes a file: it runs even when nothing uses its outputs

    @classmethod
    def INPUT_TYPES(cls):
        from ..pipeline import FACE_ENCODERS
        from ..service import DEFAULT_PRESET, PRESETS
        from ..tuning import MAX_STEPS
        from .jobs import IF_EXISTS

        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD 1.x, SD 2.x or SDXL model (it is left unchanged)."}),
                "clip": ("CLIP", {"tooltip": "The same checkpoint's CLIP."}),
                "vae": ("VAE", {"tooltip": "The same checkpoint's VAE."}),
                "image": ("IMAGE", {"tooltip": "One or more photos of the same person (a batch)."}),
                "name": ("STRING", {"default": "anna_k",
                                    "tooltip": "The token and file name: letters, digits, _ and -."}),
                "preset": (list(PRESETS), {"default": DEFAULT_PRESET, "tooltip": ", ".join(
                    f"{name}: {values['steps']} steps" for name, values in PRESETS.items())}),
                "steps": ("INT", {"default": 0, "min": 0, "max": MAX_STEPS,
                                  "tooltip": "Training steps; 0 = the preset's."}),
                # not "seed": ComfyUI's frontend gives inputs of that name a "randomize after each run" widget
                "training_seed": ("INT", {"default": 23, "min": 0, "max": MAX_SEED, "tooltip": (
                    "Seed of the training run: the same inputs and seed make the same file.")}),
                "face_encoder": (list(FACE_ENCODERS), {"default": "auto", "tooltip": (
                    "auto: insightface's buffalo_l from models/insightface, else dlib. none: learn from the photo "
                    "without a face model (direct mode).")}),
            },
            "optional": {
                "face_index": ("INT", {"default": -1, "min": -1, "max": 63, "tooltip": (
                    "Which face in each photo: -1 = the clearly largest; else the face_index CelebBasis Faces "
                    "shows.")}),
                "resolution": ("INT", {"default": 0, "min": 0, "max": 2048, "step": 8, "tooltip": (
                    "Training size in pixels; 0 = the model's own (512 SD1, 768 SD2, 1024 SDXL). Lower it when "
                    "memory is short or on the CPU.")}),
                "if_exists": (list(IF_EXISTS), {"default": "error", "tooltip": (
                    "When NAME.safetensors exists: error (unless this session made it from the same inputs), "
                    "overwrite (tune again), or use existing (skip tuning).")}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, name=None):
        """A bad name is refused when the prompt is queued, before anything runs (a linked name: when it runs)."""
        from ..errors import BadInput
        from ..identity import validate_name

        if name is None:
            return True
        try:
            validate_name(name.strip())
        except BadInput as error:
            return str(error)
        return True

    def tune(self, model, clip, vae, image, name, preset, steps, training_seed, face_encoder, face_index=-1,
             resolution=0, if_exists="error"):
        from . import jobs

        inputs = jobs.TuneInputs(name=name, preset=preset, steps=steps, seed=training_seed,
                                 face_encoder=face_encoder, face_index=face_index, resolution=resolution,
                                 if_exists=if_exists)
        jobs.tune(model, clip, vae, image, inputs)
        return (inputs.name.strip(), clip)


class CelebBasisFaces:
    """The faces the encoder finds in each image, largest first: pick one with Tune's face_index."""

    DESCRIPTION = "Shows every face found in each image (largest first) and its face_index for CelebBasis Tune."
    CATEGORY = CATEGORY
    FUNCTION = "faces"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("faces", "face_indices")
    OUTPUT_TOOLTIPS = ("A head crop of each face found.", "One line per face: its image and face_index.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "face_encoder": (FACE_ENCODER_CHOICES, {"default": "auto"})}}

    def faces(self, image, face_encoder):
        from . import jobs

        return jobs.faces(image, face_encoder)


class CelebBasisLikeness:
    """How much the largest face of each image looks like the person in the reference photo."""

    DESCRIPTION = ("Cosine similarity of each image's largest face to the reference person, by the face encoder "
                   "(the score the WebUI tab shows; about 0.2-0.4 is a fair likeness with insightface).")
    CATEGORY = CATEGORY
    FUNCTION = "likeness"
    RETURN_TYPES = ("FLOAT", "STRING")
    RETURN_NAMES = ("likeness", "scores")
    OUTPUT_TOOLTIPS = ("The mean over the images with a face (NaN when none has one).",
                       "The mean, then one line per image.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Renders to score."}),
                "reference": ("IMAGE", {"tooltip": "Photos of the person."}),
                "face_encoder": (FACE_ENCODER_CHOICES, {"default": "auto"}),
            },
            "optional": {
                "reference_face_index": ("INT", {"default": -1, "min": -1, "max": 63,
                                                 "tooltip": "Which face in the reference: -1 = the clearly largest."}),
            },
        }

    def likeness(self, image, reference, face_encoder, reference_face_index=-1):
        from . import jobs

        return jobs.likeness(image, reference, face_encoder, reference_face_index)


NODE_CLASS_MAPPINGS = {
    "CelebBasisTune": CelebBasisTune,
    "CelebBasisFaces": CelebBasisFaces,
    "CelebBasisLikeness": CelebBasisLikeness,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CelebBasisTune": "CelebBasis Tune",
    "CelebBasisFaces": "CelebBasis Faces",
    "CelebBasisLikeness": "CelebBasis Likeness",
}
