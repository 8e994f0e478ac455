"""Stand-in of Forge's ``backend`` package (Forge main @dfdcbab and Neo 2.26), tiny and CPU-only.

Same module paths, class names, call signatures and load-time behaviour as
the real one where the extension touches it; everything else is left out.
``FORGE_STANDIN_FLAVOR`` ("main" or "neo") picks the flavour-specific details.
"""
