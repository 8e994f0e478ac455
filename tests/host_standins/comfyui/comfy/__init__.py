"""Stand-in of ComfyUI's ``comfy`` package: the modules and signatures the CelebBasis nodes touch (see
``tests/host_standins/COMFYUI_FACTS.md``), written from ComfyUI's source, reduced to tiny models."""
