"""A stand-in of the parts of AUTOMATIC1111 1.10.1's ``modules`` package that extensions use.

Written for tests from the host's source (tag v1.10.1, commit 82a973c0): the
same module names, function names, signatures and behaviour where an
extension can observe them; no ldm/sgm, no gradio, no model files. See
``../README.md`` and ``../../A1111_FACTS.md``.
"""
