"""modules/cmd_args.py: the flags an extension may read from ``shared.cmd_opts``, same names and defaults."""

import argparse
import os

from modules.paths_internal import normalized_filepath, models_path, script_path, data_path, sd_default_config, sd_model_file  # noqa: F401

parser = argparse.ArgumentParser()
add = parser.add_argument
flag = lambda name: add(name, action="store_true")  # noqa: E731

for name in ("--skip-prepare-environment", "--skip-install", "--skip-torch-cuda-test", "--do-not-download-clip",
             "--no-half", "--no-half-vae", "--medvram", "--medvram-sdxl", "--lowvram", "--lowram", "--upcast-sampling",
             "--share", "--xformers", "--force-enable-xformers", "--opt-split-attention", "--opt-sub-quad-attention",
             "--opt-split-attention-invokeai", "--opt-split-attention-v1", "--opt-sdp-attention",
             "--opt-sdp-no-mem-attention", "--disable-opt-split-attention", "--disable-nan-check", "--use-ipex",
             "--listen", "--hide-ui-dir-config", "--freeze-settings", "--gradio-debug", "--opt-channelslast",
             "--api", "--api-log", "--nowebui", "--ui-debug-mode", "--no-gradio-queue", "--no-hashing",
             "--api-server-stop", "--disable-all-extensions", "--disable-extra-extensions",
             "--skip-load-model-at-start", "--enable-insecure-extension-access", "--disable-safe-unpickle",
             "--allow-code", "--autolaunch"):
    flag(name)

add("--data-dir", type=normalized_filepath, default=data_path)
add("--models-dir", type=normalized_filepath, default=None)
add("--config", type=normalized_filepath, default=sd_default_config)
add("--ckpt", type=normalized_filepath, default=sd_model_file)
add("--ckpt-dir", type=normalized_filepath, default=None)
add("--vae-dir", type=normalized_filepath, default=None)
add("--embeddings-dir", type=normalized_filepath, default=os.path.join(data_path, "embeddings"))
add("--textual-inversion-templates-dir", type=normalized_filepath, default=os.path.join(script_path, "textual_inversion_templates"))
add("--hypernetwork-dir", type=normalized_filepath, default=os.path.join(models_path, "hypernetworks"))
add("--precision", type=str, choices=["full", "half", "autocast"], default="autocast")
add("--ngrok", type=str, default=None)
add("--use-cpu", nargs="+", default=[], type=str.lower)
add("--port", type=int, default=None)
add("--ui-config-file", type=str, default=os.path.join(data_path, "ui-config.json"))
add("--freeze-settings-in-sections", type=str, default=None)
add("--freeze-specific-settings", type=str, default=None)
add("--ui-settings-file", type=str, default=os.path.join(data_path, "config.json"))
add("--gradio-auth", type=str, default=None)
add("--gradio-auth-path", type=normalized_filepath, default=None)
add("--gradio-allowed-path", action="append", default=[data_path])
add("--styles-file", type=str, action="append", default=[])
add("--api-auth", type=str, default=None)
add("--device-id", type=str, default=None)
add("--server-name", type=str, default=None)
add("--subpath", type=str)
add("--loglevel", type=str, default=None)
