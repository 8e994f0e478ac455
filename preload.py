"""Command-line options of the CelebBasis extension (the WebUI calls ``preload(parser)`` before parsing)."""


def preload(parser):
    parser.add_argument(
        "--celebbasis-models-dir", type=str, default=None,
        help="CelebBasis: folder with the insightface buffalo_l face models (det_10g.onnx, w600k_r50.onnx); "
             "overrides the setting",
    )
    parser.add_argument(
        "--celebbasis-no-download", action="store_true", default=False,
        help="CelebBasis: never download face models, whatever the setting says",
    )
