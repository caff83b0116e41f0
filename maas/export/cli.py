"""``maas export MODEL.maas model.onnx``: a saved model as an ONNX file."""
from __future__ import annotations

import argparse
import sys


def export_main(argv) -> int:
    """Loads a maas model file and writes it as ONNX; 0 on success, 1 with
    a message naming the file and the reason otherwise."""
    parser = argparse.ArgumentParser(prog="maas export",
                                     description="Write a maas model file as ONNX (opset 18).")
    parser.add_argument("model", help="a maas model file")
    parser.add_argument("output", help="the .onnx file to write")
    parser.add_argument("--format", default="onnx", choices=["onnx"])
    args = parser.parse_args(argv)
    from ..errors import ModelFormatError
    from ..saving import load_model
    from .onnx import ExportError, export_onnx
    try:
        model = load_model(args.model)
        export_onnx(model, args.output)
    except (ModelFormatError, ExportError, OSError) as e:
        print(f"maas export: error: {args.model}: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    return 0
