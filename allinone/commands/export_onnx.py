"""``python main.py export-onnx``: a gait checkpoint's embedding network as ONNX, checked against torch first."""
from __future__ import annotations

from pathlib import Path

from allinone.commands.args import Parser, int_in_range
from allinone.errors import UserError, print_error, reports_user_errors
from allinone.gait.onnx import (MAX_OPSET, META_ARCH, META_METRIC, META_SOURCE, MIN_OPSET, PARITY_ATOL,
                                PARITY_RTOL, ExportMismatchError, export_onnx)


@reports_user_errors
def export_command(argv: list[str]) -> int:
    """``python main.py export-onnx --gait-model CKPT --out model.onnx [--arch A] [--opset N]``.

    Exit 0 (the written path on stdout); 2 on a UserError, 1 when the model does not export faithfully (one
    line on stderr either way).
    """
    p = Parser(prog="python main.py export-onnx",
                                description="Export an OpenGait checkpoint's embedding network to ONNX, for the "
                                            "ONNX Runtime gait backend (--gait-model model.onnx).")
    p.add_argument("--gait-model", required=True, type=Path, metavar="CKPT", help="an OpenGait checkpoint (.pt)")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="the .onnx file to write")
    p.add_argument("--arch", default="auto", metavar="NAME",
                   help="gaitbase, gaitset, ... or auto: recognised from the checkpoint's keys (default: auto)")
    p.add_argument("--opset", type=int_in_range(MIN_OPSET, MAX_OPSET), default=17, metavar="N",
                   help="ONNX opset (default: 17)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="also load checkpoints that pickle objects besides tensors (can run code: trusted files only)")
    args = p.parse_args(argv)
    from allinone.gait.checkpoint import load_gait_model
    from allinone.io.run_folder import sha256_path

    try:
        if args.out.suffix.lower() != ".onnx":
            raise UserError("the output must end in .onnx (the gait backend is chosen by file suffix)", args.out)
        model, spec = load_gait_model(args.gait_model, args.arch, "cpu", trust_pickle=args.trust_checkpoint)
        if spec.channels > 1:  # the ONNX gait stage feeds silhouettes only
            raise UserError(f"{spec.title} is not exported: it takes skeleton maps beside the silhouettes, which "
                            "the ONNX gait stage does not make; run the .pt checkpoint", args.gait_model)
        measured: dict = {}
        try:
            path = export_onnx(model, args.out, input_hw=spec.input_size, opset=args.opset,
                               metadata={META_ARCH: spec.name, META_METRIC: spec.metric,
                                         META_SOURCE: sha256_path(args.gait_model)}, measured=measured)
        except OSError as exc:
            raise UserError(f"cannot write the ONNX file ({exc.strerror or exc})", args.out) from exc
    except ExportMismatchError as exc:
        print_error(exc)
        return 1
    if measured:
        rel = measured["max_abs"] / measured["scale"] if measured["scale"] else float("nan")
        print(f"checked against torch on {len(measured['checks'])} inputs ([n, s] = "
              f"{', '.join(f'[{n}, {s}]' for n, s in measured['checks'])}): largest difference "
              f"{measured['max_abs']:.3g} at output scale {measured['scale']:.3g} ({rel:.2g} of it; allowed "
              f"{PARITY_RTOL:g} of it + {PARITY_ATOL:g})")
    print(path)
    return 0
