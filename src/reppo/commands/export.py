"""`reppo export`: a saved policy, with its observation normalization, as ONNX."""

from __future__ import annotations

import argparse
from pathlib import Path

from reppo.commands.backends import check_torch_installed
from reppo.config import ConfigError

HELP = "export a saved policy to ONNX"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run directory written by `reppo train`")
    parser.add_argument("--onnx", type=Path, required=True, metavar="PATH",
                        help="where to write the .onnx file (never overwritten; its directory "
                             "must exist and be writable)")
    parser.add_argument("--checkpoint", type=Path, default=None, metavar="FILE",
                        help="a checkpoint file of the run, RUN_DIR/checkpoints/"
                             "ckpt_<step>.safetensors (default: the run's latest)")
    parser.add_argument("--seed-index", type=int, default=0,
                        help="which seed of a --num-seeds run to export (default 0)")


def run(args: argparse.Namespace) -> int:
    if args.onnx.exists():
        raise ConfigError(f"{args.onnx} already exists; pick another path or delete it first")
    check_torch_installed()
    from reppo.torch.export import export_onnx

    report = export_onnx(args.run_dir, args.onnx, checkpoint=args.checkpoint,
                         seed_index=args.seed_index)
    normalization = (
        "normalization included" if report["normalize_obs"] else "no observation normalization"
    )
    print(
        f"wrote {args.onnx}: obs ({report['obs_size']},) -> action ({report['action_size']},), "
        f"{normalization}; onnxruntime matches torch within {report['max_abs_error']:.1e}"
    )
    return 0
