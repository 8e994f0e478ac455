"""ComfyUI front end: the CelebBasis nodes (Tune, Faces, Likeness).

``nodes`` declares them (loaded by the repository's root ``__init__.py``
when ComfyUI imports the folder from ``custom_nodes``), ``jobs`` does their
work on the engine with ComfyUI's folders, progress bar and Interrupt, and
``images`` converts ComfyUI's IMAGE tensors. The model side is
``celebbasis_ext.hosts.comfyui``. Importing this package imports neither
torch-heavy engine parts nor anything of ComfyUI.
"""
