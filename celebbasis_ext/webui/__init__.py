"""Front ends over ``celebbasis_ext.service``: the gradio tab (``tab``), the HTTP API (``api``) and the
glue to AUTOMATIC1111-style hosts (``a1111_host``). Importing this package imports neither gradio nor
fastapi; each module imports what it needs.
"""
