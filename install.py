"""Installs what CelebBasis needs, with the WebUI's own helpers (``launch.is_installed``/``run_pip``).

Runs on every WebUI start, so it only looks (no pip call) when everything is
there. ComfyUI-Manager runs it too, with ComfyUI's Python and no WebUI
launcher: then pip itself is called (``python -m pip``), with the same rules.
What it adds when missing:

* an ONNX runtime for insightface's face models: ``onnxruntime-gpu`` when the
  WebUI's torch sees CUDA 12 (the CUDA that PyPI's onnxruntime-gpu is built
  for), else ``onnxruntime`` (CPU: one photo's face detection is quick there,
  and a CUDA-12 runtime beside Forge Neo's CUDA-13 torch would fail to load);
  nothing when any onnxruntime build is already installed (two builds side by
  side break each other);
* not the ``insightface`` package itself: CelebBasis runs insightface's ONNX
  models (det_10g, w600k_r50) with onnxruntime directly, and the package
  cannot be installed whole next to A1111's protobuf pin (its onnx dependency
  needs a newer one), while ``--no-deps`` leaves it unimportable;
* (SD.Next's ``run_pip`` silently skips onnxruntime packages: when the
  runtime is still missing afterwards, pip is run directly for it)
* ``dlib-bin`` and ``face_recognition_models`` 0.3.0 or newer (older ones lack
  the CNN face check and 5-point model): the offline fallback encoder.

Every pip call gets a constraints file pinning every package already
installed to its current version, so nothing the WebUI (or another extension)
installed is ever upgraded or downgraded: if a package cannot be installed
without that, it is skipped with a message, and CelebBasis falls back to the
encoders that are there. A failure never stops the WebUI from starting.
"""

import importlib.metadata
import importlib.util
import os
import tempfile

try:
    import launch  # the WebUI's launcher (A1111, Forge, SD.Next)
except ImportError:  # ComfyUI-Manager runs this file with ComfyUI's Python
    launch = None


def _distributions():
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name and dist.version:
            yield name, dist.version


def _onnxruntime_builds():
    return sorted({name for name, _ in _distributions() if name.lower().replace("_", "-").startswith("onnxruntime")})


#: the CUDA major version PyPI's onnxruntime-gpu wheels are built for
ONNXRUNTIME_GPU_CUDA = 12


def _torch_cuda_major():
    """The CUDA major version of the WebUI's torch when it sees a GPU, else None."""
    try:
        import torch

        if not torch.cuda.is_available() or not torch.version.cuda:
            return None
        return int(str(torch.version.cuda).split(".")[0])
    except Exception:  # noqa: BLE001 - no torch, or a broken driver: the CPU build is the safe choice
        return None


def _at_least(name, version) -> bool:
    """Installed in at least ``version`` (numeric parts only)."""
    try:
        found = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    parts = []
    for piece in found.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts + [0] * (3 - len(parts))) >= tuple(version)


def plan():
    """(pip arguments, description) for each missing piece; empty when all is installed."""
    steps = []
    if not _onnxruntime_builds():
        build = "onnxruntime-gpu" if _torch_cuda_major() == ONNXRUNTIME_GPU_CUDA else "onnxruntime"
        steps.append((f"install {build}", f"{build} for CelebBasis"))
    if not _is_installed("dlib"):  # dlib or dlib-bin: both provide the module
        steps.append(("install dlib-bin", "dlib-bin for CelebBasis"))
    if not _at_least("face_recognition_models", (0, 3, 0)):
        steps.append(('install "face_recognition_models>=0.3.0"', "face_recognition_models for CelebBasis"))
    return steps


def _is_installed(module) -> bool:
    if launch is not None:
        return launch.is_installed(module)
    return importlib.util.find_spec(module) is not None


def _constraints_file():
    handle, path = tempfile.mkstemp(prefix="celebbasis-constraints-", suffix=".txt")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        for name, version in sorted(set(_distributions())):
            stream.write(f"{name}=={version}\n")
    return path


def _pip_directly(args, constraints, desc):
    """pip itself: without a WebUI launcher, and where SD.Next's run_pip silently skips onnxruntime*."""
    import shlex
    import subprocess
    import sys

    print(f"CelebBasis: installing {desc.replace(' for CelebBasis', '')}")
    command = [sys.executable, "-m", "pip", *shlex.split(args), "-c", constraints, "--prefer-binary"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise RuntimeError(last)


def main():
    steps = plan()
    if not steps:
        return
    constraints = _constraints_file()
    try:
        for args, desc in steps:
            try:
                if launch is None:
                    _pip_directly(args, constraints, desc)
                    continue
                launch.run_pip(f'{args} -c "{constraints}"', desc)
                if args.startswith("install onnxruntime") and not _onnxruntime_builds():
                    print("CelebBasis: the WebUI's installer skipped onnxruntime; running pip directly")
                    _pip_directly(args, constraints, desc)
            except Exception as error:  # noqa: BLE001 - report and go on; the WebUI must start
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                print(f"CelebBasis: could not install {desc.replace(' for CelebBasis', '')} ({first}); "
                      "CelebBasis will say which face encoders are missing")
    finally:
        os.remove(constraints)


main()
