"""``celebbasis`` / ``python -m celebbasis_ext``: the standalone command line.

Exit codes: 0 done, 1 a runtime failure, 2 bad input, 130 interrupted. Errors
are one line ``error: ...`` on stderr (a traceback only with ``--debug``), and
no file is written on any failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Optional, Sequence

from .errors import BadInput, Cancelled, CelebBasisError

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as BadInput (exit 2, one line)."""

    def error(self, message):
        raise BadInput(message)


MODEL_HELP = ("diffusers folder, single-file .safetensors checkpoint, or a Hugging Face id: owner/name (diffusers "
              "layout) or owner/name/file.safetensors, downloaded once into the Hugging Face cache")
OFFLINE_HELP = "never download: a Hugging Face id must already be in the cache (as HF_HUB_OFFLINE=1)"


def _add_model_options(parser):
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--offline", action="store_true", help=OFFLINE_HELP)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    parser.add_argument("--prediction-type", default="auto", choices=("auto", "epsilon", "v"),
                        help="override the model's prediction type (SD2 single files)")
    parser.add_argument("--architecture", default=None, help="override the detected architecture")


def _add_view_options(parser):
    from .tuning import DEFAULT_LOSS_MASK, DEFAULT_VIEWS

    parser.add_argument("--views", default=DEFAULT_VIEWS,
                        help=f"training views: paper (face pasted on black, as the authors), photo (crops of the "
                             f"photo's own framing) or mixed (default {DEFAULT_VIEWS})")
    parser.add_argument("--loss-mask", default=None,
                        help=f"face (weight the loss towards the face) or none (default {DEFAULT_LOSS_MASK}, "
                             "none with --face-encoder none)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="celebbasis", description="Put a real person into Stable Diffusion from one photo.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    tune = commands.add_parser("tune", help="learn an embedding from one or more photos of one person")
    tune.add_argument("photos", nargs="+", help="photo files (JPEG, PNG, WebP, ...)")
    _add_model_options(tune)
    tune.add_argument("--name", required=True, help="token name, also the file name")
    tune.add_argument("--out", default="embeddings", help="output folder (default ./embeddings)")
    tune.add_argument("--steps", type=int, default=800)
    tune.add_argument("--seed", type=int, default=23)
    tune.add_argument("--lr", type=float, default=1e-2, help="learning rate (1e-2 at batch 2, as the paper)")
    tune.add_argument("--mode", default="paper", help="paper (face encoder + linear map) or direct")
    tune.add_argument("--face-encoder", default="auto", help="auto, insightface, dlib or none")
    tune.add_argument("--face-index", type=int, default=None, help="which face when a photo has several")
    tune.add_argument("--models-dir", default=None, help="folder with insightface buffalo_l models")
    tune.add_argument("--allow-download", action="store_true", help="download face models if missing")
    tune.add_argument("--names", default=None, help="your own celebrity names file")
    tune.add_argument("--resolution", type=int, default=None, help="training canvas size (default: the model's)")
    _add_view_options(tune)
    tune.add_argument("--overwrite", action="store_true", help="replace an existing file of that name")
    tune.add_argument("--half", action="store_true", help="save fp16 vectors")

    generate = commands.add_parser("generate", help="render a prompt that uses your embeddings")
    _add_model_options(generate)
    generate.add_argument("--embeddings", required=True, help="folder of .safetensors embeddings")
    generate.add_argument("--prompt", required=True)
    generate.add_argument("--negative", default="")
    generate.add_argument("--steps", type=int, default=30)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--width", type=int, default=None)
    generate.add_argument("--height", type=int, default=None)
    generate.add_argument("--guidance", type=float, default=7.0)
    generate.add_argument("--out", required=True, help="output .png")

    basis = commands.add_parser("basis", help="build or load the celeb basis of a model")
    _add_model_options(basis)
    basis.add_argument("--names", default=None)
    basis.add_argument("--k", type=int, default=512)
    basis.add_argument("--json", action="store_true")
    basis.add_argument("--list-names", action="store_true", help="also list every name: its tokens and whether used")

    batch = commands.add_parser("tune-batch", help="one identity per photo (or per sub-folder of photos)")
    batch.add_argument("folder")
    _add_model_options(batch)
    batch.add_argument("--out", default="embeddings")
    batch.add_argument("--steps", type=int, default=800)
    batch.add_argument("--seed", type=int, default=23)
    batch.add_argument("--mode", default="paper")
    batch.add_argument("--face-encoder", default="auto")
    batch.add_argument("--group", type=int, default=4, help="identities per batch (default 4)")
    batch.add_argument("--resolution", type=int, default=None)
    _add_view_options(batch)
    batch.add_argument("--names", default=None)
    batch.add_argument("--overwrite", action="store_true")
    batch.add_argument("--compare", action="store_true", help="also time the first group one by one")

    bench = commands.add_parser("bench", help="measure tuning speed and memory")
    source = bench.add_mutually_exclusive_group(required=True)
    source.add_argument("--arch", choices=("tiny-sd1", "tiny-sd2", "tiny-sdxl", "sd15", "sd21", "sdxl"),
                        help="a real or tiny architecture with random weights")
    source.add_argument("--model", help=MODEL_HELP)
    bench.add_argument("--offline", action="store_true", help=OFFLINE_HELP)
    bench.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    bench.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    bench.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--identity-steps", type=int, default=None, help="steps of the one-identity run")
    bench.add_argument("--resolution", type=int, default=None)
    bench.add_argument("--channels-last", action="store_true", help="UNet in channels-last memory format")
    bench.add_argument("--compile", action="store_true", help="torch.compile the UNet (the warm-up shows its cost)")
    bench.add_argument("--json", default=None, help="write the figures to this file")

    inspect = commands.add_parser("inspect", help="show an embedding file's shapes and metadata")
    inspect.add_argument("file")
    inspect.add_argument("--json", action="store_true")

    doctor = commands.add_parser("doctor", help="what this computer has for CelebBasis, what is missing, how to fix it")
    doctor.add_argument("--models-dir", default=None, help="folder with insightface buffalo_l models")
    doctor.add_argument("--webui-root", default=None, help="the WebUI folder, when not run from inside it")
    doctor.add_argument("--json", action="store_true")

    download = commands.add_parser("download", help="fetch the face models or the CLIP vocabulary, with progress")
    download.add_argument("what", choices=("face-models", "clip-vocab"),
                          help="face-models: insightface buffalo_l (about 280 MB, verified); "
                               "clip-vocab: CLIP's tokenizer files for single-file checkpoints (1.7 MB)")
    download.add_argument("--models-dir", default=None, help="where face models go (default ~/.insightface/models)")

    ui = commands.add_parser("ui", help="serve the WebUI tab and the HTTP API on a diffusers model (local only)")
    _add_model_options(ui)
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer only)")
    ui.add_argument("--port", type=int, default=7861)
    ui.add_argument("--out", default="embeddings", help="output folder (default ./embeddings)")
    ui.add_argument("--face-encoder", default="auto", help="auto, insightface, dlib or none")
    ui.add_argument("--models-dir", default=None, help="folder with insightface buffalo_l models")
    ui.add_argument("--allow-download", action="store_true", help="download face models if missing")
    ui.add_argument("--names", default=None, help="your own celebrity names file")
    ui.add_argument("--preview-steps", type=int, default=20, help="sampling steps of preview images")
    from .evaluate.command import add_parser as add_eval_parser

    add_eval_parser(commands, _add_model_options)
    return parser


def _load(args):
    from .diffusers_adapter import DiffusersAdapter
    from .loading import load_pipeline

    prediction = getattr(args, "prediction_type", "auto")
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype,
                         prediction_type=None if prediction == "auto" else prediction,
                         architecture=getattr(args, "architecture", None))
    return pipe, DiffusersAdapter(pipe, model_name=os.path.basename(os.path.normpath(args.model)))


def _progress_bar(total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, desc="tuning", unit="step", file=sys.stderr, dynamic_ncols=True)

    def update(progress):
        bar.update(progress.step - bar.n)
        bar.set_postfix(loss=f"{progress.loss:.4f}")
        if progress.step >= progress.total:
            bar.close()

    return update, bar


def cmd_tune(args) -> int:
    from .pipeline import TuneRequest, tune_identity
    from .tuning import LOSS_MASK_AUTO, TuneOptions

    options = TuneOptions(steps=args.steps, seed=args.seed, learning_rate=args.lr, mode=args.mode,
                          dtype=args.dtype, resolution=args.resolution, views=args.views,
                          loss_mask=args.loss_mask or LOSS_MASK_AUTO)
    request = TuneRequest(photos=args.photos, name=args.name, out_dir=args.out, options=options,
                          face_encoder=args.face_encoder, face_index=args.face_index, overwrite=args.overwrite,
                          models_dir=args.models_dir, allow_download=args.allow_download, names_file=args.names,
                          half=args.half)
    request.validate()
    for photo in args.photos:
        if not os.path.isfile(photo):
            raise BadInput(f"no such photo: {photo}")
    _, adapter = _load(args)
    update, bar = _progress_bar(options.steps)
    try:
        outcome = tune_identity(adapter, request, progress=update)
    finally:
        bar.close()
    for warning in outcome.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"basis: {outcome.basis.names_used} names, rank {list(outcome.basis.rank)}, K {outcome.basis.k}")
    print(f"final loss {outcome.identity.metadata.get('final_loss')} in {outcome.result.seconds:.1f} s")
    print(outcome.path)
    return EXIT_OK


def cmd_generate(args) -> int:
    from .generate import generate_image, load_embeddings_into

    out = os.path.abspath(args.out)
    if not out.lower().endswith(".png"):
        raise BadInput("--out must be a .png file")
    if not os.path.isdir(args.embeddings):
        raise BadInput(f"no such embeddings folder: {args.embeddings}")
    pipe, _ = _load(args)
    loaded = load_embeddings_into(pipe, args.embeddings)
    print(f"embeddings: {', '.join(loaded) if loaded else 'none'}", file=sys.stderr)
    image = generate_image(pipe, args.prompt, negative=args.negative, steps=args.steps, seed=args.seed,
                           width=args.width, height=args.height, guidance=args.guidance)
    tmp = out + ".tmp"
    image.save(tmp, format="PNG")
    os.replace(tmp, out)
    print(out)
    return EXIT_OK


def cmd_basis(args) -> int:
    from .basis import basis_for

    _, adapter = _load(args)
    basis = basis_for(adapter, names_file=args.names, k=args.k)
    summary = {"family": adapter.family.value, **basis.summary()}
    if args.list_names:
        from .names import read_names, tokenize_names

        summary["names"] = [
            {"name": celeb.name, "tokens": [list(word) for word in celeb.tokens], "used": celeb.used}
            for celeb in tokenize_names(read_names(args.names), adapter.tokenize)
        ]
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            if key != "names":
                print(f"{key}: {value}")
        for entry in summary.get("names", []):
            print(f"{'used  ' if entry['used'] else 'unused'} {entry['name']}: {entry['tokens']}")
    return EXIT_OK


def cmd_tune_batch(args) -> int:
    from .basis import basis_for
    from .batch import find_subjects, tune_batch
    from .tuning import LOSS_MASK_AUTO, TuneOptions

    options = TuneOptions(steps=args.steps, seed=args.seed, mode=args.mode, dtype=args.dtype,
                          resolution=args.resolution, views=args.views,
                          loss_mask=args.loss_mask or LOSS_MASK_AUTO).validate()
    if not 1 <= args.group <= 64:
        raise BadInput("--group must be from 1 to 64")
    subjects = find_subjects(args.folder)
    _, adapter = _load(args)
    basis = basis_for(adapter, names_file=args.names)
    report = tune_batch(adapter, basis, subjects, args.out, options, face_encoder=args.face_encoder,
                        group_size=args.group, overwrite=args.overwrite, compare=args.compare,
                        log=lambda line: print(line, file=sys.stderr))
    for name, why in report.skipped.items():
        print(f"skipped {name}: {why}", file=sys.stderr)
    print(f"{len(report.written)} identities in {report.seconds:.1f} s: {report.identities_per_minute:.2f} per minute")
    if report.sequential_identities_per_minute is not None:
        print(f"one by one: {report.sequential_identities_per_minute:.2f} per minute")
    for path in report.written:
        print(path)
    return EXIT_OK if report.written else EXIT_BAD_INPUT


def cmd_bench(args) -> int:
    from .bench import format_report, run_bench, write_json
    from .diffusers_adapter import DiffusersAdapter
    from .loading import resolve_device, resolve_dtype
    from .tuning import TuneOptions

    if args.arch:
        from .architectures import build_pipeline, get_architecture

        device = resolve_device(args.device)
        dtype = resolve_dtype(args.dtype, device, get_architecture(args.arch).family)
        pipe = build_pipeline(args.arch, seed=0).to(device=device, dtype=dtype)
        adapter, label = DiffusersAdapter(pipe, model_name=args.arch), args.arch
    else:
        _, adapter = _load(args)
        label = os.path.basename(os.path.normpath(args.model))
    adapter.channels_last, adapter.compile_unet = args.channels_last, args.compile
    options = TuneOptions(dtype=args.dtype, resolution=args.resolution).validate()
    report = run_bench(adapter, label, steps=args.steps, repeats=args.repeats, identity_steps=args.identity_steps,
                       options=options, log=lambda line: print(line, file=sys.stderr))
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
    return EXIT_OK


def cmd_inspect(args) -> int:
    from .identity import describe_identity, load_identity

    info = describe_identity(load_identity(args.file))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"name: {info['name']}\nfamily: {info['family']}\ndtype: {info['dtype']}")
        for key, shape in info["shapes"].items():
            print(f"{key}: {shape}")
        for key, value in sorted(info["metadata"].items()):
            print(f"  {key}: {value}")
    return EXIT_OK


def cmd_ui(args) -> int:
    from .pipeline import FACE_ENCODERS
    from .standalone_ui import serve

    if args.face_encoder not in FACE_ENCODERS:
        raise BadInput(f"unknown face encoder {args.face_encoder!r}: choose one of {', '.join(FACE_ENCODERS)}")
    if not 1 <= args.port <= 65535:
        raise BadInput(f"--port must be from 1 to 65535, not {args.port}")
    serve(args.model, host=args.host, port=args.port, out_dir=args.out, device=args.device, dtype=args.dtype,
          face_encoder=args.face_encoder, models_dir=args.models_dir, allow_download=args.allow_download,
          names_file=args.names, preview_steps=args.preview_steps)
    return EXIT_OK


def cmd_doctor(args) -> int:
    from .doctor import MISSING, as_json, report, run_checks

    findings = run_checks(models_dir=args.models_dir, webui_root=args.webui_root)
    print(json.dumps(as_json(findings), indent=2) if args.json else report(findings))
    return EXIT_FAILURE if any(item.status == MISSING for item in findings) else EXIT_OK


def cmd_download(args) -> int:
    if args.what == "clip-vocab":
        from .clip_tokenizer import tokenizer_files_dir

        print(tokenizer_files_dir(allow_download=True))
        return EXIT_OK
    from .face import model_files

    folder = model_files.find_buffalo_l(args.models_dir)
    if folder is None:
        target = model_files.default_download_dir(args.models_dir)
        print(f"downloading insightface buffalo_l into {target} (non-commercial research licence)", file=sys.stderr)
        folder = model_files.download_buffalo_l(target, progress=True)
    else:
        print(f"already there: {folder}", file=sys.stderr)
    print(folder)
    return EXIT_OK


def cmd_eval(args) -> int:
    from .evaluate.command import run

    return run(args, _load)


COMMANDS = {"eval": cmd_eval, "tune": cmd_tune, "generate": cmd_generate, "basis": cmd_basis, "inspect": cmd_inspect,
            "tune-batch": cmd_tune_batch, "bench": cmd_bench, "ui": cmd_ui, "doctor": cmd_doctor,
            "download": cmd_download}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "offline", False):
            os.environ["HF_HUB_OFFLINE"] = "1"  # for huggingface_hub, diffusers and transformers alike
        return COMMANDS[args.command](args)
    except Cancelled as error:
        print(f"cancelled: {error}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BadInput as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except CelebBasisError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except ModuleNotFoundError as error:  # torch, diffusers, gradio ...: say which command installs it
        if debug:
            raise
        from .doctor import missing_package_message

        ours = (error.name or "").split(".")[0] == __name__.split(".")[0]  # a bug of ours, not an install step
        print(f"error: {error if ours else missing_package_message(error.name or '')}", file=sys.stderr)
        return EXIT_FAILURE
    except MemoryError:
        print("error: out of memory; try fewer steps, --dtype fp16, or a smaller --resolution", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as error:  # a runtime failure still gets one line
        if debug:
            raise
        if "out of memory" in str(error).lower():
            print("error: out of GPU memory; try --dtype fp16, a smaller --resolution, or close other GPU programs",
                  file=sys.stderr)
        else:
            print(f"error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
