import os

if os.environ.get("FORGE_STANDIN_FLAVOR", "neo") == "neo":
    version = "neo"
    release = "2.26"
else:
    version = "2.0.1v1.10.1"
