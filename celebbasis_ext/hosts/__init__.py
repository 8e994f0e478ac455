"""Adapters for models owned by a WebUI host, one module per host.

``a1111``: AUTOMATIC1111 1.10 (ldm SD1/SD2 and sgm SDXL models in
``shared.sd_model``). Each module imports the host's ``modules.*`` only inside
functions, so importing it outside that host (tests, Forge, the CLI) is safe.
"""
