"""``celebbasis ui``: the WebUI tab and the HTTP API outside any WebUI, on a diffusers model.

The same ``build_tab`` and API routes as in the WebUI, over a
``DiffusersAdapter``; previews are rendered by splicing the learned vectors
into the prompt (no token is added to the pipeline's vocabulary, so tuning
the same name again stays possible). With no txt2img to send the token to,
the page has its own prompt box below the tab (``PromptRender``). Binds to
127.0.0.1 unless told otherwise; the API has no authentication, so only
expose it on a trusted network.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

from .errors import BadInput

log = logging.getLogger(__name__)

EXTENSION_ROOT = Path(__file__).resolve().parents[1]
PACKAGED_ASSETS = Path(__file__).resolve().parent / "webui" / "assets"
"""Where a wheel carries copies of the WebUI's script and style (see setup.py)."""
CHECKOUT_ASSETS = {"celebbasis.js": ("javascript", "celebbasis.js"), "style.css": ("style.css",)}
"""Where the WebUI loads them from: the extension's root."""
RENDER_PROMPT_EXAMPLE = "a photo of {token} as an astronaut"


class DiffusersPreview:
    """``render(path, name, templates, seed)`` for the service: one image per template."""

    def __init__(self, pipe, adapter, steps: int = 20, guidance: float = 7.0):
        self.pipe = pipe
        self.adapter = adapter
        self.steps = steps
        self.guidance = guidance

    def __call__(self, path, name: str, templates: Sequence[str], seed: int = 0) -> list:
        import torch

        from .identity import load_identity

        identity = load_identity(path)
        keys = self.adapter.export_keys
        if set(keys) - set(identity.vectors):
            raise BadInput(f"{Path(path).name} was made for another kind of model (it has "
                           f"{', '.join(sorted(identity.vectors))}; this model needs {', '.join(keys)})")
        embedding = torch.cat([identity.vectors[key].float() for key in keys], dim=-1)
        if embedding.shape[-1] != self.adapter.embedding_width:
            raise BadInput(f"{Path(path).name} is {embedding.shape[-1]} wide; this model needs "
                           f"{self.adapter.embedding_width}")
        embedding = embedding[:2].to(self.adapter.device)
        images = []
        for index, template in enumerate(templates):
            with torch.no_grad():
                cond = self.adapter.encode_prompts([template], embedding)
            dtype = self.pipe.unet.dtype
            extra = {"prompt_embeds": cond["context"].to(dtype)}
            if cond.get("pooled") is not None:
                extra["pooled_prompt_embeds"] = cond["pooled"].to(dtype)
            generator = torch.Generator("cpu").manual_seed(int(seed) + index)
            result = self.pipe(num_inference_steps=self.steps, guidance_scale=self.guidance, generator=generator,
                               output_type="pil", **extra)
            images.append(result.images[0])
        return images


class PromptRender:
    """The page's prompt box: render a prompt that uses the embeddings in the output folder.

    The standalone answer to the tab's "Send to txt2img". It renders with the
    ``generate`` command's path (``generate_image``), the names made usable by
    ``embeddings_for_prompts``, so the model is unchanged afterwards; it does
    not wait behind a running tuning but says so.
    """

    def __init__(self, pipe, service):
        self.pipe = pipe
        self.service = service

    def __call__(self, prompt: str, negative: str = "", seed=0, steps=20, guidance=7.0):
        """The image and the names it could use; ``BadInput`` for an empty prompt or a busy model."""
        from .generate import embeddings_for_prompts, generate_image

        prompt = (prompt or "").strip()
        if not prompt:
            raise BadInput("type a prompt that uses your token, e.g. " + RENDER_PROMPT_EXAMPLE.format(token="anna_k"))
        if not self.service.lock.acquire(blocking=False):
            raise BadInput("the model is busy (training or a preview): render when it is done")
        try:
            warnings: list[str] = []
            folder = self.service.out_dir
            usable = embeddings_for_prompts(self.pipe, folder, warn=warnings.append) if folder.is_dir() \
                else contextlib.nullcontext([])
            with usable as names:
                image = generate_image(self.pipe, prompt, negative=negative or "", steps=int(steps or 20),
                                       seed=int(seed or 0), guidance=float(guidance))
        finally:
            self.service.lock.release()
        used = [name for name in names if _mentions(prompt, name)]
        return image, used, warnings


def _mentions(prompt: str, name: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", prompt, re.IGNORECASE) is not None


def create_service(pipe, out_dir="embeddings", *, model_name: str = "", face_encoder: str = "auto",
                   models_dir: Optional[str] = None, allow_download: bool = False,
                   names_file: Optional[str] = None, preview_steps: int = 20, default_preset: str = "Balanced",
                   save_fp16: bool = False, basis_cache_dir: Optional[str] = None):
    """A ``CelebBasisService`` over a loaded diffusers pipeline."""
    from .diffusers_adapter import DiffusersAdapter
    from .service import CelebBasisService, ServiceSettings

    adapter = DiffusersAdapter(pipe, model_name=model_name)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    settings = ServiceSettings(face_encoder=face_encoder, models_dir=models_dir, allow_download=allow_download,
                               names_file=names_file, preview_steps=preview_steps, default_preset=default_preset,
                               save_fp16=save_fp16, basis_cache_dir=basis_cache_dir)
    return CelebBasisService(lambda: adapter, out_dir, settings,
                             render=DiffusersPreview(pipe, adapter, steps=preview_steps), device=lambda: adapter.device)


def build_app(service, title: str = "CelebBasis", *, pipe=None):
    """A FastAPI app with the API under /celebbasis/v1 and the tab at /; with ``pipe``, a prompt box below it."""
    from fastapi import FastAPI

    from .webui.api import mount
    from .webui.compat import import_gradio
    from .webui.tab import build_tab

    gr = import_gradio()
    script, css = ui_assets()
    major = int(str(gr.__version__).split(".")[0])
    extra = {"js": "() => {\n" + script + "\n}"} if major >= 4 and script else {}
    # System fonts: the default theme would fetch Google Fonts, and this UI makes no outside requests.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "Consolas", "monospace"])
    tab = build_tab(service, send_label="Use in prompt" if pipe is not None else "Send to txt2img")
    with gr.Blocks(title=title, css=css, analytics_enabled=False, theme=theme, **extra) as demo:
        with gr.Column(elem_id="tab_celebbasis"):
            gr.Markdown("## CelebBasis: learn a person from one photo")
            tab.render()
            if pipe is not None:
                _render_section(gr, PromptRender(pipe, service))
        if major < 4 and script:
            demo.load(None, None, None, _js="() => {\n" + script + "\n}")
    demo.queue()
    app = FastAPI(title=title)
    mount(app, service)
    app = gr.mount_gradio_app(app, demo, path="/")
    return app, demo


def _render_section(gr, render: PromptRender) -> None:
    """Prompt, negative prompt, seed, steps, a Render button and the image, below the tab."""
    from .webui.tab import event_kwargs

    with gr.Group(elem_id="celebbasis_render_group"):
        gr.Markdown("### Render a prompt with your token")
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", lines=2, elem_id="celebbasis_render_prompt",
                                placeholder=RENDER_PROMPT_EXAMPLE.format(token="anna_k"))
            negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="celebbasis_render_negative")
        with gr.Row():
            seed = gr.Number(value=0, precision=0, label="Seed", elem_id="celebbasis_render_seed")
            steps = gr.Slider(minimum=1, maximum=150, step=1, value=20, label="Steps",
                              elem_id="celebbasis_render_steps")
            button = gr.Button("Render", variant="primary", elem_id="celebbasis_render_button")
        image = gr.Image(label="Image", type="pil", interactive=False, height=384, elem_id="celebbasis_render_image")
        note = gr.HTML(elem_id="celebbasis_render_note")

    def on_render(prompt_value, negative_value, seed_value, steps_value):
        import html

        try:
            picture, used, warnings = render(prompt_value, negative_value, seed_value, steps_value)
        except BadInput as error:
            return None, f"<div class='celebbasis-error'>{html.escape(str(error))}</div>"
        except Exception as error:  # noqa: BLE001 - one line for the page, the traceback in the log
            log.exception("CelebBasis render failed")
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return None, f"<div class='celebbasis-error'>{html.escape(first)}</div>"
        if used:
            text = "Rendered with " + ", ".join(f"<b>{html.escape(name)}</b>" for name in used) + "."
        else:
            text = "No token of yours is in the prompt: type the name you trained (e.g. press Use in prompt)."
        text += "".join(f"<br>⚠ {html.escape(warning)}" for warning in warnings)
        return picture, f"<div class='celebbasis-{'ok' if used else 'warning'}'>{text}</div>"

    button.click(on_render, inputs=[prompt, negative, seed, steps], outputs=[image, note], **event_kwargs())


def ui_assets() -> tuple[str, str]:
    """The WebUI's ``celebbasis.js`` and ``style.css``, from the installed package or the checkout."""
    return _read_asset("celebbasis.js"), _read_asset("style.css")


def asset_path(name: str) -> Optional[Path]:
    """The installed package's copy first: in site-packages, the "root" holds other projects' files."""
    for candidate in (PACKAGED_ASSETS / name, EXTENSION_ROOT.joinpath(*CHECKOUT_ASSETS[name])):
        if candidate.is_file():
            return candidate
    return None


def _read_asset(name: str) -> str:
    path = asset_path(name)
    try:
        return path.read_text(encoding="utf-8") if path is not None else _missing(name)
    except OSError:
        return _missing(name)


def _missing(name: str) -> str:
    log.warning("%s not found: the UI runs without it (no live progress or name hints); "
                "reinstall the package (pip install --force-reinstall celebbasis-ext)", name)
    return ""


class Server:
    """A running standalone UI (``serve(..., block=False)``): ``url`` and ``close()``."""

    def __init__(self, server, thread, url: str, service):
        self._server = server
        self._thread = thread
        self.url = url
        self.service = service

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def serve(model=None, host: str = "127.0.0.1", port: int = 7861, *, pipe=None, out_dir="embeddings",
          device: str = "auto", dtype: str = "auto", face_encoder: str = "auto", models_dir: Optional[str] = None,
          allow_download: bool = False, names_file: Optional[str] = None, preview_steps: int = 20,
          block: bool = True, basis_cache_dir: Optional[str] = None):
    """Serve the tab and the API for ``model`` (a diffusers folder or .safetensors) or a loaded ``pipe``.

    With ``block`` (the CLI) this returns when the server stops; without it a
    ``Server`` runs in a background thread (tests).
    """
    import uvicorn

    if pipe is None:
        if model is None:
            raise BadInput("give a model: a diffusers folder or a .safetensors checkpoint")
        from .loading import load_pipeline

        pipe = load_pipeline(model, device=device, dtype=dtype)
    model_name = os.path.basename(os.path.normpath(str(model))) if model is not None else ""
    service = create_service(pipe, out_dir, model_name=model_name, face_encoder=face_encoder, models_dir=models_dir,
                             allow_download=allow_download, names_file=names_file, preview_steps=preview_steps,
                             basis_cache_dir=basis_cache_dir)
    app, _ = build_app(service, pipe=pipe)
    config = uvicorn.Config(app, host=host, port=int(port), log_level="warning")
    server = uvicorn.Server(config)
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    url = f"http://{shown}:{port}/"
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("the CelebBasis UI and API listen on %s without authentication", host)
    if block:
        print(f"CelebBasis UI on {url} (Ctrl+C stops it); embeddings go to {service.out_dir}")
        server.run()
        return None
    thread = threading.Thread(target=server.run, name="celebbasis-ui", daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            raise RuntimeError(f"the UI server did not start on {host}:{port}")
        time.sleep(0.05)
    return Server(server, thread, url, service)
