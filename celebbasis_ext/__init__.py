"""CelebBasis: put a real person into Stable Diffusion from one photo.

The engine (basis, face, tuning, export) lives in this package and knows
nothing about gradio or any WebUI host. The core modules need only torch,
numpy and safetensors; diffusers, insightface, dlib and gradio are imported by
the modules that need them, when they are used.
"""

__version__ = "0.1.0"
