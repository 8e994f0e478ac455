"""The "CelebBasis" tab: gradio UI over ``CelebBasisService``, for the WebUI and the standalone UI.

Only gradio APIs present in both 3.41.2 (A1111 1.10) and 4.40 (Forge) are
used: ``gr.update``, ``gr.Group``, constructor arguments (no ``.style()``),
``gr.Image(type="pil")``, ``gr.File`` values as a path string or an object
with ``.name``, ``show_progress`` as a string, and JavaScript through
``event_js`` (``_js=`` on gradio 3, ``js=`` on gradio 4).

The callbacks are plain functions (``TabCallbacks``) that call the same
service methods as the HTTP API, so they are tested without a browser. The
Train and Preview buttons go through the host's ``queue_wrapper``
(``modules.call_queue.wrap_gradio_gpu_call``) when one is given: the first
input is then the progress id from the page's ``celebbasis_train`` /
``celebbasis_preview`` script (the host's progress bar, next to the Train
button), and the last output is the HTML the wrapper appends its timing to.

Faces are numbered for people: "face 1 (largest)", "face 2", ... (the API's
``face_index`` stays 0-based). After a page reload, choosing an identity in
the table or the Identity list fills Token and File again.
"""

from __future__ import annotations

import html
import logging
from typing import Callable, Optional

from ..errors import BadInput, Cancelled
from ..pipeline import FACE_ENCODERS
from ..service import PRESETS, CelebBasisService, normalize_photo, one_line
from ..augment import LOSS_MASKS, VIEW_MODES
from ..tuning import MODES, TuneOptions
from .compat import import_gradio
from .evaluate_section import build_evaluate_section

log = logging.getLogger(__name__)

IDENTITY_HEADERS = ["Name", "Created", "Base model", "Family", "Likeness", "Steps", "File"]
FACE_CHOICE_AUTO = "auto (largest face)"
NO_FACE_IN_PREVIEWS = "no face"
ENCODER_CHOICE_DEFAULT = "default (Settings)"
MODE_CHOICE_AUTO = "auto"
LOSS_MASK_CHOICE_AUTO = "auto"
"""The face where a face encoder finds it, else none (``pipeline.resolve_loss_mask``)."""


def gradio_major() -> int:
    gr = import_gradio()

    try:
        return int(str(gr.__version__).split(".")[0])
    except ValueError:
        return 4


def event_js(js: Optional[str]) -> dict:
    """Keyword arguments that attach ``js`` to an event on gradio 3 (``_js``) and 4 (``js``).

    A bare name refers to a function of javascript/celebbasis.js; it is called
    only if the script is loaded, else the inputs pass through unchanged.
    """
    if not js:
        return {}
    if js.isidentifier():
        js = f"(...args) => (typeof window.{js} === 'function' ? window.{js}(...args) : args)"
    return {"_js": js} if gradio_major() < 4 else {"js": js}


def event_kwargs(js: Optional[str] = None, **kwargs) -> dict:
    """An event's keyword arguments: ``js`` as above; on gradio 4 the event is left out of gradio's own
    API page (the tab's events are internal; the extension's HTTP API is /celebbasis/v1)."""
    kwargs.update(event_js(js))
    if gradio_major() >= 4:
        kwargs["show_api"] = False
    return kwargs


def _html(kind: str, text: str) -> str:
    return f"<div class='celebbasis-{kind}'>{html.escape(text)}</div>"


def file_paths(files) -> list:
    """gr.File values (one or many; gradio 3 wrappers, gradio 4 paths or dicts) as photo sources."""
    if files is None:
        return []
    if not isinstance(files, (list, tuple)):
        files = [files]
    return [normalize_photo(item) for item in files if item is not None]


def face_label(index: int) -> str:
    """A detected face as the user sees it: "face 1 (largest)", "face 2", ... (``index`` is 0-based)."""
    return f"face {index + 1} (largest)" if index == 0 else f"face {index + 1}"


def _face_index(choice) -> Optional[int]:
    """The Face dropdown's choice as the service's 0-based index (a bare number is taken as one already)."""
    if choice in (None, "", FACE_CHOICE_AUTO):
        return None
    words = str(choice).split()
    try:
        if words[0] == "face" and len(words) > 1:
            return int(words[1]) - 1
        return int(words[0])
    except (ValueError, IndexError):
        raise BadInput(f"face choice {choice!r} is not a face number") from None


def duration(seconds: float) -> str:
    """45 s, 12 min, 1 h 20 min."""
    seconds = max(0, int(round(seconds)))
    if seconds < 90:
        return f"{seconds} s"
    minutes = int(round(seconds / 60))
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def identity_rows(service: CelebBasisService) -> list[list]:
    rows = []
    for item in service.identities():
        if item.get("likeness") is not None:
            likeness = f"{item['likeness']:.3f}"
        else:  # measured without a face in the renders, or never measured (no preview yet)
            likeness = NO_FACE_IN_PREVIEWS if item.get("likeness_note") else ""
        rows.append([item["name"], item["date"], item.get("base_model") or "", item.get("family") or "",
                     likeness, "" if item.get("steps") is None else str(item["steps"]), item["file"]])
    return rows or [["", "", "", "", "", "", ""]]


def identity_names(service: CelebBasisService) -> list[str]:
    return [item["name"] for item in service.identities()]


class TabCallbacks:
    """What the tab's events do, as plain functions over the service (tested without gradio)."""

    def __init__(self, service: CelebBasisService):
        self.service = service

    # -- name -----------------------------------------------------------------------------------
    def check_name(self, name, overwrite=False) -> str:
        check = self.service.check_name(name or "", bool(overwrite))
        return _html("name-" + check.level, check.message)

    # -- photos -> faces --------------------------------------------------------------------------
    def detect(self, files, face_encoder=None):
        """Gallery items, face-choice dropdown update, a note, and each gallery item's face index."""
        gr = import_gradio()

        photos = file_paths(files)
        auto = gr.update(choices=[FACE_CHOICE_AUTO], value=FACE_CHOICE_AUTO)
        if not photos:
            return [], auto, "", []
        encoder = None if face_encoder in (None, "", ENCODER_CHOICE_DEFAULT) else face_encoder
        try:
            if self.service.resolve_face_encoder(encoder) == "none":
                return [], auto, _html("info", "Face encoder 'none': the centre of each photo is used."), []
            items, indices, most = [], [], 0
            for number, photo in enumerate(photos, 1):
                faces = self.service.detect(photo, encoder)
                most = max(most, len(faces))
                for face in faces:  # no detector score: it means nothing to a user
                    caption = face_label(face.index) if len(photos) == 1 else f"photo {number}, {face_label(face.index)}"
                    items.append((face.thumbnail, caption))
                    indices.append(face.index)
        except BadInput as error:
            return [], auto, _html("error", str(error)), []
        except Exception as error:  # noqa: BLE001 - one line in the tab, details in the log
            log.exception("face detection failed")
            return [], auto, _html("error", one_line(error)), []
        choices = [FACE_CHOICE_AUTO] + [face_label(index) for index in range(most)]
        if most == 0:
            note = _html("error", "No face found: use a photo where the face is clearly visible.")
        elif most == 1:
            note = _html("ok", "One face found per photo.")
        else:
            note = _html("warning", f"Up to {most} faces in a photo: pick the person with 'Face' "
                                    "(face 1 is the largest), or click their crop.")
        return items, gr.update(choices=choices, value=FACE_CHOICE_AUTO), note, indices

    def select_face(self, face_map, index):
        """A click on gallery item ``index`` picks that face's index."""
        gr = import_gradio()

        if isinstance(index, (list, tuple)):
            index = index[0] if index else None
        if isinstance(index, int) and face_map and 0 <= index < len(face_map):
            return gr.update(value=face_label(face_map[index]))
        return gr.update()

    # -- presets --------------------------------------------------------------------------------
    def preset_steps(self, preset):
        gr = import_gradio()

        return gr.update(value=PRESETS.get(preset, PRESETS[self.service.default_preset()])["steps"])

    def encoder_mode(self, face_encoder):
        gr = import_gradio()

        encoder = None if face_encoder in (None, "", ENCODER_CHOICE_DEFAULT) else face_encoder
        try:
            kind = self.service.resolve_face_encoder(encoder)
        except BadInput:
            return gr.update()
        return gr.update(value="direct") if kind == "none" else gr.update()

    # -- training -------------------------------------------------------------------------------
    def train_note(self, steps=None) -> str:
        """Next to Train: that tuning runs on the CPU (said before it starts), and the expected time measured on
        the last run here."""
        try:
            steps = int(steps) if steps else PRESETS[self.service.default_preset()]["steps"]
        except (TypeError, ValueError):
            return ""
        on_cpu = (self.service.tuning_device() or "").split(":")[0] == "cpu"
        estimate = self.service.expected_time(steps)
        parts = ["No GPU: tuning runs on the CPU, which is slow."] if on_cpu else []
        if estimate is not None:
            parts.append(f"Expected time for {steps} steps: about {duration(estimate['seconds'])} (the last run here "
                         f"took {estimate['step_seconds']:.2f} s a step and {duration(estimate['setup_seconds'])} "
                         "to prepare).")
        elif on_cpu:
            parts.append(f"{steps} steps take from tens of minutes on a small model to hours on a full-size one; "
                         "the expected time shows here after the first steps.")
        return _html("warning" if on_cpu else "info", " ".join(parts)) if parts else ""

    def train(self, id_task, files, name, preset, steps, learning_rate, seed, mode, face_encoder, face_choice,
              overwrite, views=None, loss_mask=None):
        """Returns token, file, identities table, identity choices, name hint, the note next to Train, and the
        status HTML (last: the host's queue wrapper appends its timing to it)."""
        gr = import_gradio()

        unchanged = [gr.update()] * 6
        options = {"steps": steps, "learning_rate": learning_rate, "seed": seed,
                   "mode": None if mode in (None, "", MODE_CHOICE_AUTO) else mode, "views": views,
                   "loss_mask": loss_mask}
        encoder = None if face_encoder in (None, "", ENCODER_CHOICE_DEFAULT) else face_encoder
        try:
            photos = file_paths(files)
            if not photos:
                raise BadInput("upload a photo of the person first")
            result = self.service.tune(photos, name or "", preset=preset, options=options,
                                       face_index=_face_index(face_choice), overwrite=bool(overwrite),
                                       face_encoder=encoder)
        except Cancelled:
            return unchanged + [_html("info", "Interrupted: nothing was written.")]
        except BadInput as error:
            return unchanged + [_html("error", str(error))]
        except Exception as error:  # noqa: BLE001 - one line in the tab, details in the log
            log.exception("CelebBasis training failed")
            return unchanged + [_html("error", one_line(error))]
        token, path = result["token"], result["file"]
        lines = [f"Done: type <b>{html.escape(token)}</b> in a prompt (saved as <code>{html.escape(path)}</code>, "
                 f"final loss {result.get('final_loss')}, {result.get('seconds')} s)."]
        lines += [f"<br>⚠ {html.escape(warning)}" for warning in result["warnings"]]
        names = identity_names(self.service)
        return [token, path, gr.update(value=identity_rows(self.service)),
                gr.update(choices=names, value=token if token in names else None),
                self.check_name(name, overwrite), self.train_note(steps),
                "<div class='celebbasis-ok'>" + "".join(lines) + "</div>"]

    def interrupt(self):
        self.service.cancel()
        return _html("info", "Interrupting...")

    # -- previews -------------------------------------------------------------------------------
    def preview(self, id_task, token, files, face_choice=None):
        """Gallery of previews, the identities table (its Likeness column), and the likeness HTML (last).

        ``id_task`` is the progress id the page's script gives the host's queue wrapper."""
        gr = import_gradio()

        try:
            if not (token or "").strip():
                raise BadInput("train an identity first, or choose one in the identities table")
            result = self.service.preview(token.strip(), photos=file_paths(files),
                                          face_index=_face_index(face_choice))
        except Cancelled:
            return [], gr.update(), _html("info", "Preview interrupted.")
        except BadInput as error:
            return [], gr.update(), _html("error", str(error))
        except Exception as error:  # noqa: BLE001
            log.exception("CelebBasis preview failed")
            return [], gr.update(), _html("error", one_line(error))
        items = []
        for image, prompt, score in zip(result["images"], result["prompts"], result["scores"]):
            items.append((image, prompt if score is None else f"{prompt} · likeness {score:.3f}"))
        if result["likeness"] is not None:
            text = _html("ok", f"Likeness {result['likeness']:.3f} (judged with {result.get('judge')}: cosine "
                               "similarity of the face features, as in celebbasis eval; "
                               "the same person usually scores above 0.4 with insightface, above 0.9 with dlib)")
        else:
            text = _html("info", result.get("note") or "no likeness score")
        return items, gr.update(value=identity_rows(self.service)), text

    # -- identities -----------------------------------------------------------------------------
    def _identity(self, name) -> Optional[dict]:
        name = str(name or "").strip()
        return next((item for item in self.service.identities() if item["name"] == name), None) if name else None

    def choose_identity(self, name):
        """The Identity list: that identity's token and file go to Token and File (empty after a page reload)."""
        gr = import_gradio()

        item = self._identity(name)
        return (item["name"], item["file"]) if item else (gr.update(), gr.update())

    def select_row(self, rows, index):
        """A click on a row of the identities table (``rows`` as shown, ``index`` gradio's [row, column]): that
        identity in the Identity list, Token and File."""
        gr = import_gradio()

        row = index[0] if isinstance(index, (list, tuple)) and index else index
        rows = rows.values.tolist() if hasattr(rows, "values") and hasattr(rows, "columns") else rows  # pandas
        if not isinstance(row, int) or not rows or not 0 <= row < len(rows):
            return gr.update(), gr.update(), gr.update()
        item = self._identity(rows[row][0])
        if item is None:
            return gr.update(), gr.update(), gr.update()
        return gr.update(choices=identity_names(self.service), value=item["name"]), item["name"], item["file"]

    def page_load(self, steps=None):
        """When a page opens: the Identity list's choices (the table refreshes itself) and the note next to Train."""
        gr = import_gradio()

        return gr.update(choices=identity_names(self.service)), self.train_note(steps)

    def refresh(self):
        gr = import_gradio()

        return gr.update(value=identity_rows(self.service)), gr.update(choices=identity_names(self.service))

    def delete(self, name):
        gr = import_gradio()

        try:
            if not name:
                raise BadInput("nothing deleted: choose an identity first")
            path = self.service.delete(name)
            message = _html("ok", f"Deleted {path.name}.")
        except BadInput as error:
            message = _html("error", str(error))
        except Exception as error:  # noqa: BLE001
            log.exception("CelebBasis delete failed")
            message = _html("error", one_line(error))
        return (gr.update(value=identity_rows(self.service)),
                gr.update(choices=identity_names(self.service), value=None), message)


def build_tab(service: CelebBasisService, queue_wrapper: Optional[Callable] = None, *,
              callbacks: Optional[TabCallbacks] = None, send_label: str = "Send to txt2img"):
    """The tab as a ``gr.Blocks`` (the host renders it; the standalone UI wraps it).

    ``queue_wrapper(fn, extra_outputs=[...])``: the host's GPU queue
    (``wrap_gradio_gpu_call``) for Train and Preview. Component ids start with
    ``celebbasis_`` (the JavaScript and the CSS use them). ``send_label``: the
    standalone UI's send button fills its own prompt box ("Use in prompt").
    """
    gr = import_gradio()

    cb = callbacks or TabCallbacks(service)
    settings = service.settings
    default_preset = service.default_preset()

    def queued(fn, extra_outputs):
        return queue_wrapper(fn, extra_outputs=extra_outputs) if queue_wrapper is not None else fn

    with gr.Blocks(analytics_enabled=False) as tab:
        with gr.Row():
            with gr.Column(scale=1, elem_id="celebbasis_left"):
                photos = gr.File(label="Photos of one person (one is enough)", file_count="multiple",
                                 file_types=["image"], elem_id="celebbasis_photos")
                faces = gr.Gallery(label="Faces found (largest first)", columns=4, height=180,
                                   elem_id="celebbasis_faces")
                face_note = gr.HTML(elem_id="celebbasis_face_note")
                with gr.Row():
                    face_choice = gr.Dropdown(label="Face", choices=[FACE_CHOICE_AUTO], value=FACE_CHOICE_AUTO,
                                              elem_id="celebbasis_face_index")
                    name = gr.Textbox(label="Name (the word you will type in prompts)", placeholder="e.g. anna_k",
                                      max_lines=1, elem_id="celebbasis_name")
                name_hint = gr.HTML(elem_id="celebbasis_name_hint")
                preset = gr.Radio(list(PRESETS), value=default_preset, label="Preset",
                                  elem_id="celebbasis_preset")
                with gr.Accordion("Advanced", open=False, elem_id="celebbasis_advanced"):
                    defaults = TuneOptions()
                    steps = gr.Slider(minimum=1, maximum=2000, step=1, value=PRESETS[default_preset]["steps"],
                                      label="Steps", elem_id="celebbasis_steps")
                    with gr.Row():
                        learning_rate = gr.Number(value=defaults.learning_rate, label="Learning rate",
                                                  elem_id="celebbasis_lr")
                        seed = gr.Number(value=defaults.seed, precision=0, label="Seed", elem_id="celebbasis_seed")
                    with gr.Row():
                        mode = gr.Radio([MODE_CHOICE_AUTO, *MODES], value=MODE_CHOICE_AUTO, label="Mode",
                                        elem_id="celebbasis_mode")
                        face_encoder = gr.Dropdown([ENCODER_CHOICE_DEFAULT, *FACE_ENCODERS],
                                                   value=ENCODER_CHOICE_DEFAULT,
                                                   label=f"Face encoder (Settings: {settings.face_encoder})",
                                                   elem_id="celebbasis_face_encoder")
                    with gr.Row():
                        views = gr.Radio(list(VIEW_MODES), value=defaults.views, label="Training views",
                                         elem_id="celebbasis_views")
                        loss_mask = gr.Radio([LOSS_MASK_CHOICE_AUTO, *LOSS_MASKS], value=LOSS_MASK_CHOICE_AUTO,
                                             label="Loss mask",
                                             elem_id="celebbasis_loss_mask")
                overwrite = gr.Checkbox(value=False, label="Replace an existing file of that name",
                                        elem_id="celebbasis_overwrite")
                with gr.Row():
                    train = gr.Button("Train", variant="primary", elem_id="celebbasis_train")
                    interrupt = gr.Button("Interrupt", elem_id="celebbasis_interrupt")
                train_note = gr.HTML(cb.train_note(PRESETS[default_preset]["steps"]), elem_id="celebbasis_train_note")
                progress = gr.HTML(elem_id="celebbasis_progress")  # the host's progress bar, with its ETA
                id_task = gr.Textbox(visible=False, elem_id="celebbasis_id_task")
                face_map = gr.State([])
            with gr.Column(scale=1, elem_id="celebbasis_right"):
                status = gr.HTML(elem_id="celebbasis_status")
                with gr.Group():
                    token = gr.Textbox(label="Token", interactive=True, max_lines=1, elem_id="celebbasis_token")
                    file = gr.Textbox(label="File", interactive=False, max_lines=1, elem_id="celebbasis_file")
                with gr.Row():
                    send = gr.Button(send_label, elem_id="celebbasis_send")
                    preview = gr.Button("Preview", elem_id="celebbasis_preview_button")
                previews = gr.Gallery(label="Preview", columns=4, height=220, elem_id="celebbasis_previews")
                likeness = gr.HTML(elem_id="celebbasis_likeness")
        with gr.Group(elem_id="celebbasis_identities_group"):
            # A callable value is re-evaluated on every page load (gradio 3 and 4): a page opened later
            # lists identities made since the UI was built.
            table = gr.Dataframe(headers=IDENTITY_HEADERS, value=lambda: identity_rows(service), interactive=False,
                                 type="array", label="Identities (click one to use it)",
                                 elem_id="celebbasis_identities")
            with gr.Row():
                chosen = gr.Dropdown(label="Identity", choices=identity_names(service), value=None,
                                     elem_id="celebbasis_identity")
                refresh = gr.Button("Refresh", elem_id="celebbasis_refresh")
                delete = gr.Button("Delete", variant="stop", elem_id="celebbasis_delete")
            delete_note = gr.HTML(elem_id="celebbasis_delete_note")
        tab.celebbasis_evaluate = build_evaluate_section(service, queued, event_kwargs)

        hidden = event_kwargs(show_progress="hidden")
        name.change(cb.check_name, inputs=[name, overwrite], outputs=[name_hint], **hidden)
        overwrite.change(cb.check_name, inputs=[name, overwrite], outputs=[name_hint], **hidden)
        photos.change(cb.detect, inputs=[photos, face_encoder], outputs=[faces, face_choice, face_note, face_map],
                      **event_kwargs())

        def on_select(face_map_value, evt):
            return cb.select_face(face_map_value, getattr(evt, "index", None))

        on_select.__annotations__ = {"evt": gr.SelectData}  # gradio passes the event by this annotation
        faces.select(on_select, inputs=[face_map], outputs=[face_choice], **event_kwargs())
        preset.change(cb.preset_steps, inputs=[preset], outputs=[steps], **hidden)
        steps.change(cb.train_note, inputs=[steps], outputs=[train_note], **hidden)
        # on every page load (the host renders this Blocks inside its own; gradio 3 and 4 run sub-Blocks' loads)
        tab.load(cb.page_load, inputs=[steps], outputs=[chosen, train_note], **hidden)
        face_encoder.change(cb.encoder_mode, inputs=[face_encoder], outputs=[mode], **hidden)
        face_encoder.change(cb.detect, inputs=[photos, face_encoder], outputs=[faces, face_choice, face_note, face_map],
                            **event_kwargs())
        train.click(
            queued(cb.train, extra_outputs=[gr.update()] * 6),
            inputs=[id_task, photos, name, preset, steps, learning_rate, seed, mode, face_encoder, face_choice,
                    overwrite, views, loss_mask],
            outputs=[token, file, table, chosen, name_hint, train_note, status],
            **event_kwargs("celebbasis_train"),
        )
        interrupt.click(cb.interrupt, inputs=None, outputs=[progress], **event_kwargs())
        send.click(None, inputs=[token], outputs=None, **event_kwargs("celebbasis_send_to_txt2img"))
        preview.click(queued(cb.preview, extra_outputs=[gr.update()] * 2), inputs=[id_task, token, photos, face_choice],
                      outputs=[previews, table, likeness], **event_kwargs("celebbasis_preview"))

        def on_row(rows, evt):
            return cb.select_row(rows, getattr(evt, "index", None))

        on_row.__annotations__ = {"evt": gr.SelectData}
        table.select(on_row, inputs=[table], outputs=[chosen, token, file], **event_kwargs())
        chosen.input(cb.choose_identity, inputs=[chosen], outputs=[token, file], **event_kwargs())
        refresh.click(cb.refresh, inputs=None, outputs=[table, chosen], **event_kwargs())
        delete.click(cb.delete, inputs=[chosen], outputs=[table, chosen, delete_note],
                     **event_kwargs("celebbasis_confirm_delete"))
    tab.celebbasis_callbacks = cb
    return tab


__all__ = ["build_tab", "TabCallbacks", "event_js", "event_kwargs", "file_paths", "identity_rows", "IDENTITY_HEADERS"]
