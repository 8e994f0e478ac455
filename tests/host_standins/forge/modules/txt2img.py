"""``modules/txt2img.py`` of Forge main / Neo, reduced: the Generate button's function.

``ui.py`` wraps ``txt2img`` in ``call_queue.wrap_gradio_gpu_call`` (queue lock, ``shared.state``, in
gradio's worker thread); ``txt2img`` hands the work to ``modules_forge.main_thread`` with
``run_and_wait_result`` and waits: the generation itself runs on the main thread, under
``torch.inference_mode`` (``process_images``). Arguments reduced to prompt, seed, steps, size.
"""

import json

from modules import processing, shared
from modules_forge import main_thread


def txt2img_function(id_task, request, prompt, seed=0, steps=2, width=64, height=64):
    p = processing.StableDiffusionProcessingTxt2Img(sd_model=shared.sd_model, prompt=prompt, seed=seed, steps=steps,
                                                    width=width, height=height, n_iter=1, batch_size=1)
    try:
        processed = processing.process_images(p)
    finally:
        p.close()
    return processed.images, json.dumps({"infotexts": processed.infotexts}), "", ""


def txt2img(id_task, request, *args):
    return main_thread.run_and_wait_result(txt2img_function, id_task, request, *args)
