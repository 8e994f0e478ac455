"""The tab's "Evaluate" section: a small evaluation of chosen identities, run in the host's queue.

6 prompts x 2 seeds per identity (``evaluate.service_run``), rendered by the
host, scored like ``celebbasis eval`` (the same judge and CLIP score), the
report shown in the tab and written to a folder. The callback is a plain
method (``EvaluateCallbacks.evaluate``), tested without a browser.
"""

from __future__ import annotations

import html
import logging
from typing import Callable

from ..errors import BadInput, Cancelled
from ..evaluate.clip_score import DEFAULT_CLIP
from ..evaluate.service_run import PROMPTS, SEEDS, TAB_SETS, evaluate_identities, report_fragment
from ..service import CelebBasisService, one_line
from .compat import import_gradio

log = logging.getLogger(__name__)


def _message(kind: str, text: str) -> str:
    return f"<div class='celebbasis-{kind}'>{html.escape(text)}</div>"


class EvaluateCallbacks:
    """What the section's buttons do, over the service."""

    def __init__(self, service: CelebBasisService):
        self.service = service

    def evaluate(self, names, files, prompt_set, clip) -> list:
        """The report as HTML, and the status line (last: the host's queue wrapper appends its timing)."""
        from .tab import file_paths

        gr = import_gradio()

        try:
            names = [names] if isinstance(names, str) else list(names or [])
            outcome, plan = evaluate_identities(self.service, names, file_paths(files), prompt_set or "single",
                                                clip)
        except Cancelled as error:
            return [gr.update(), _message("info", f"Interrupted: {error}")]
        except BadInput as error:
            return [gr.update(), _message("error", str(error))]
        except Exception as error:  # noqa: BLE001 - one line in the tab, details in the log
            log.exception("CelebBasis evaluation failed")
            return [gr.update(), _message("error", one_line(error))]
        where = html.escape(str(outcome.files["html"]))
        status = (f"<div class='celebbasis-ok'>{len(outcome.records)} images scored in {outcome.seconds:.0f} s; "
                  f"the full report: <code>{where}</code></div>")
        return [report_fragment(outcome, plan), status]

    def identity_choices(self):
        gr = import_gradio()

        return gr.update(choices=[item["name"] for item in self.service.identities()])


def build_evaluate_section(service: CelebBasisService, queued: Callable, event_kwargs: Callable) -> EvaluateCallbacks:
    """The section's components and events, inside the tab's Blocks; ``queued(fn, extra_outputs)`` is the tab's
    wrapper for the host's GPU queue."""
    gr = import_gradio()

    callbacks = EvaluateCallbacks(service)
    with gr.Accordion("Evaluate", open=False, elem_id="celebbasis_evaluate"):
        gr.HTML(_message("info", f"Renders {PROMPTS} prompts x {SEEDS} seeds per identity and scores each image: "
                                 "likeness to the reference photo (judged by a face model other than the one used "
                                 "to tune, when there is one) and prompt following (CLIP). The same scores as "
                                 "`celebbasis eval`, on a small set."))
        with gr.Row():
            names = gr.Dropdown(label="Identities", choices=[item["name"] for item in service.identities()],
                                multiselect=True, elem_id="celebbasis_evaluate_identities")
            refresh = gr.Button("Refresh list", elem_id="celebbasis_evaluate_refresh")
            prompt_set = gr.Radio(list(TAB_SETS), value="single", label="Prompts",
                                  elem_id="celebbasis_evaluate_prompts")
        photos = gr.File(label="Reference photos, named like the identities (ann.jpg); not needed for identities "
                               "trained since the WebUI started", file_count="multiple", file_types=["image"],
                         elem_id="celebbasis_evaluate_photos")
        clip = gr.Textbox(value=DEFAULT_CLIP, max_lines=1, elem_id="celebbasis_evaluate_clip",
                          label="CLIP model for the prompt score: a folder or hub id (downloaded once), or none")
        run = gr.Button("Evaluate", variant="primary", elem_id="celebbasis_evaluate_button")
        status = gr.HTML(elem_id="celebbasis_evaluate_status")
        report = gr.HTML(elem_id="celebbasis_evaluate_report")
    refresh.click(callbacks.identity_choices, inputs=None, outputs=[names], **event_kwargs())
    run.click(queued(callbacks.evaluate, extra_outputs=[gr.update()]), inputs=[names, photos, prompt_set, clip],
              outputs=[report, status], **event_kwargs())
    return callbacks
