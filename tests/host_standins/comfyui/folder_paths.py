"""``folder_paths``: ComfyUI's model folders.

As in ComfyUI: ``base_path`` (here ``$COMFY_STANDIN_ROOT``), ``models_dir = base_path/models``,
``folder_names_and_paths[name] = ([folders], extensions)`` with ``embeddings`` in
``models/embeddings``; ``get_folder_paths(name)`` returns a copy of the folder list;
``get_filename_list(name)`` the files with a known extension, relative to their folder.
"""

import os

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
base_path = os.path.abspath(os.environ.get("COMFY_STANDIN_ROOT", "."))
models_dir = os.path.join(base_path, "models")
output_directory = os.path.join(base_path, "output")
folder_names_and_paths = {
    "checkpoints": ([os.path.join(models_dir, "checkpoints")], supported_pt_extensions),
    "embeddings": ([os.path.join(models_dir, "embeddings")], supported_pt_extensions),
    "custom_nodes": ([os.path.join(base_path, "custom_nodes")], set()),
}


def get_folder_paths(folder_name):
    return folder_names_and_paths[folder_name][0][:]


def get_output_directory():
    return output_directory


def get_filename_list(folder_name):
    folders, extensions = folder_names_and_paths[folder_name]
    found = set()
    for folder in folders:
        for root, _, files in os.walk(folder, followlinks=True):
            for name in files:
                if os.path.splitext(name)[1].lower() in extensions:
                    found.add(os.path.relpath(os.path.join(root, name), folder))
    return sorted(found)
