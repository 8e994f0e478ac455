"""Find insightface's buffalo_l model files on disk, or download them when allowed.

Most WebUI installs already hold buffalo_l somewhere (insightface's own cache,
ControlNet's or Forge's annotator downloads), so we look there before ever
touching the network. Downloads happen only on request, are checked against a
pinned SHA-256, and only the two files we use are unpacked, atomically.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from ..errors import ModelFilesMissing

REQUIRED_FILES = ("det_10g.onnx", "w600k_r50.onnx")
"""SCRFD-10GF detector with 5 keypoints, and ArcFace ResNet-50 (WebFace600K)."""

BUFFALO_L_URL = "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"

BUFFALO_L_SHA256: str | None = "80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f"
"""SHA-256 of the official buffalo_l.zip (288,621,354 bytes).

This build machine has no internet, so the value was not recomputed here: it is
the digest that many unrelated public projects pin for this exact release
asset, all agreeing. A download is used only if it matches the configured
digest (this constant, the ``CELEBBASIS_BUFFALO_L_SHA256`` environment
variable, or the ``sha256`` argument); if none is configured (set this to
None to force that), downloads are refused rather than trusted unverified.
"""

ENV_WEBUI_ROOT = "CELEBBASIS_WEBUI_ROOT"
ENV_URL = "CELEBBASIS_BUFFALO_L_URL"
ENV_SHA256 = "CELEBBASIS_BUFFALO_L_SHA256"

MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024
MAX_MEMBER_BYTES = 512 * 1024 * 1024
_ALLOWED_SCHEMES = ("https", "http", "file")


def candidate_dirs(models_dir: os.PathLike | None = None, webui_root: os.PathLike | None = None) -> list[Path]:
    """Folders searched for buffalo_l, in order (duplicates removed)."""
    dirs: list[Path] = []
    if models_dir:
        base = Path(models_dir).expanduser()
        dirs += [base, base / "buffalo_l", base / "models" / "buffalo_l"]
    roots = _webui_roots(webui_root)
    for root in roots:
        dirs.append(root / "models" / "insightface" / "models" / "buffalo_l")
    for root in roots:
        dirs.append(root / "extensions" / "sd-webui-controlnet" / "annotator" / "downloads" / "insightface" / "models" / "buffalo_l")
        dirs.append(root / "models" / "ControlNetPreprocessor" / "insightface" / "models" / "buffalo_l")
    home = os.environ.get("INSIGHTFACE_HOME")
    if home:
        dirs.append(Path(home).expanduser() / "models" / "buffalo_l")
    dirs.append(Path("~/.insightface/models/buffalo_l").expanduser())
    return _unique(dirs)


def find_buffalo_l(models_dir: os.PathLike | None = None, webui_root: os.PathLike | None = None) -> Path | None:
    """The first searched folder that holds both required files, or None."""
    for folder in candidate_dirs(models_dir, webui_root):
        if all((folder / name).is_file() and (folder / name).stat().st_size > 0 for name in REQUIRED_FILES):
            return folder
    return None


def default_download_dir(models_dir: os.PathLike | None = None, webui_root: os.PathLike | None = None) -> Path:
    """Where a download goes: the configured models folder, else WebUI's, else insightface's cache."""
    if models_dir:
        return Path(models_dir).expanduser() / "buffalo_l"
    root = webui_root or os.environ.get(ENV_WEBUI_ROOT)
    if root:
        return Path(root).expanduser() / "models" / "insightface" / "models" / "buffalo_l"
    return Path("~/.insightface/models/buffalo_l").expanduser()


def ensure_buffalo_l(
    models_dir: os.PathLike | None = None,
    webui_root: os.PathLike | None = None,
    *,
    allow_download: bool = False,
    url: str | None = None,
    sha256: str | None = None,
    progress=True,
) -> Path:
    """Folder holding both buffalo_l files: found on disk, or downloaded if allowed.

    ``progress``: True for a tqdm bar on stderr, False for none, or a
    callable(bytes received, total bytes or None).
    """
    folder = find_buffalo_l(models_dir, webui_root)
    if folder is not None:
        return folder
    if not allow_download:
        searched = ", ".join(str(path) for path in candidate_dirs(models_dir, webui_root))
        raise ModelFilesMissing(
            f"insightface buffalo_l models not found: put det_10g.onnx and w600k_r50.onnx in one of {searched}, or allow downloads"
        )
    return download_buffalo_l(default_download_dir(models_dir, webui_root), url=url, sha256=sha256, progress=progress)


def download_buffalo_l(
    target_dir: os.PathLike,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress=True,
    timeout: float = 60.0,
) -> Path:
    """Download buffalo_l.zip, verify it, unpack only the two files we need.

    The archive goes to a hidden temporary file beside the target and is
    deleted afterwards whatever happens; the .onnx files appear under their
    final names only after both were written in full. A digest mismatch leaves
    nothing behind (not even folders this call created).
    """
    url = url or os.environ.get(ENV_URL) or BUFFALO_L_URL
    expected = (sha256 or os.environ.get(ENV_SHA256) or BUFFALO_L_SHA256 or "").strip().lower()
    if not expected:
        raise ModelFilesMissing(
            f"refusing to use an unverified download of {url}: configure its SHA-256 ({ENV_SHA256}) or place the files yourself"
        )
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in _ALLOWED_SCHEMES:
        raise ModelFilesMissing(f"cannot download buffalo_l from {url!r}: only https, http and file URLs are allowed")

    target = Path(target_dir).expanduser()
    created = _make_dirs(target)
    archive = None
    try:
        fd, archive_name = tempfile.mkstemp(prefix=".buffalo_l-", suffix=".zip.part", dir=target)
        archive = Path(archive_name)
        with os.fdopen(fd, "wb") as out:
            digest = _fetch(url, out, timeout, progress)
        if digest != expected:
            raise ModelFilesMissing(
                f"downloaded buffalo_l.zip does not match the expected SHA-256 (got {digest[:16]}..., expected {expected[:16]}...); not used"
            )
        _extract(archive, target)
    except BaseException:
        if archive is not None:
            archive.unlink(missing_ok=True)
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    archive.unlink(missing_ok=True)
    return target


def _fetch(url: str, out, timeout: float, progress) -> str:
    """Stream ``url`` into ``out`` with a size cap and a progress bar; returns the hex SHA-256."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "CelebBasis"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total = response.headers.get("Content-Length") if hasattr(response, "headers") else None
            total = int(total) if total and str(total).isdigit() else None
            if total is not None and total > MAX_DOWNLOAD_BYTES:
                raise ModelFilesMissing(f"download of {url} is too large ({total >> 20} MB)")
            bar = _progress_bar(total, progress)
            received = 0
            try:
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    received += len(chunk)
                    if received > MAX_DOWNLOAD_BYTES:
                        raise ModelFilesMissing(f"download of {url} is too large (over {MAX_DOWNLOAD_BYTES >> 20} MB)")
                    digest.update(chunk)
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
    except ModelFilesMissing:
        raise
    except (OSError, ValueError) as exc:  # URLError, HTTPError and timeouts are OSErrors
        reason = getattr(exc, "reason", None) or exc
        raise ModelFilesMissing(f"could not download buffalo_l from {url}: {reason}") from None
    return digest.hexdigest()


def _progress_bar(total: int | None, progress):
    """A tqdm bar on stderr (``progress`` True), a caller's ``progress(received, total)``, or nothing."""
    if callable(progress):
        return _CallbackBar(progress, total)
    if not progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="insightface buffalo_l.zip",
                dynamic_ncols=True)


class _CallbackBar:
    """tqdm's update/close, reported to a callable as (bytes received, total bytes or None)."""

    def __init__(self, callback, total: int | None):
        self.callback, self.total, self.received = callback, total, 0
        callback(0, total)

    def update(self, count: int) -> None:
        self.received += count
        self.callback(self.received, self.total)

    def close(self) -> None:
        pass


def _extract(archive: Path, target: Path) -> None:
    """Write the two needed members under temporary names, then rename both into place."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = {}
            for info in bundle.infolist():
                base = info.filename.replace("\\", "/").rsplit("/", 1)[-1]
                if base in REQUIRED_FILES and not info.is_dir() and base not in members:
                    members[base] = info
            missing = [name for name in REQUIRED_FILES if name not in members]
            if missing:
                raise ModelFilesMissing(f"buffalo_l.zip does not contain {', '.join(missing)}")
            staged = []
            try:
                for name in REQUIRED_FILES:
                    info = members[name]
                    if info.file_size > MAX_MEMBER_BYTES:
                        raise ModelFilesMissing(f"{name} in buffalo_l.zip is implausibly large")
                    fd, part = tempfile.mkstemp(prefix=f".{name}-", suffix=".part", dir=target)
                    staged.append((Path(part), target / name))
                    with os.fdopen(fd, "wb") as out, bundle.open(info) as src:
                        shutil.copyfileobj(src, out, 1 << 20)
                for part, final in staged:
                    os.replace(part, final)
            finally:
                for part, _ in staged:
                    part.unlink(missing_ok=True)
    except zipfile.BadZipFile:
        raise ModelFilesMissing("the downloaded buffalo_l.zip is not a valid zip archive") from None


def _make_dirs(target: Path) -> list[Path]:
    """mkdir -p that reports which folders it created, outermost first."""
    created = []
    for folder in reversed([target, *target.parents]):
        if not folder.exists():
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                raise ModelFilesMissing(f"cannot create {folder}: {exc.strerror or exc}") from None
            created.append(folder)
    return created


def _webui_roots(webui_root: os.PathLike | None) -> list[Path]:
    roots = []
    for value in (webui_root, os.environ.get(ENV_WEBUI_ROOT)):
        if value:
            roots.append(Path(value).expanduser())
    roots.append(Path.cwd())
    return _unique(roots)


def _unique(paths: list[Path]) -> list[Path]:
    seen, result = set(), []
    for path in paths:
        key = os.path.normcase(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            result.append(path)
    return result
