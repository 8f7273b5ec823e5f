"""`reppo eval`: the evaluation protocol on a saved run, optionally with a video."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from reppo.commands.backends import run_backend
from reppo.compile_cache import enable_compilation_cache
from reppo.config import Config, ConfigError

HELP = "evaluate a saved policy with deterministic actions"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run directory written by `reppo train`")
    parser.add_argument("--episodes", type=int, default=16, help="episodes per seed")
    parser.add_argument("--seed", type=int, default=None,
                        help="draw the evaluation episodes as a run with this seed does "
                             "(default: the run's own seed, so the episodes of its evaluation "
                             "at that checkpoint)")
    parser.add_argument("--checkpoint", type=Path, default=None, metavar="FILE",
                        help="a checkpoint file of the run, RUN_DIR/checkpoints/"
                             "ckpt_<step>.safetensors (default: the run's latest)")
    parser.add_argument("--video", type=Path, default=None,
                        help="also record one episode of the first seed to this .mp4/.gif "
                             "(never overwritten; its directory must exist and be writable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--backend", choices=("jax", "torch"), default=None,
                        help="backend that runs the policy (default: the one that trained "
                             "it); either backend reads either's runs")


def _check_video_path(video: Path) -> None:
    if video.suffix.lower() not in (".gif", ".mp4"):
        raise ConfigError(f"--video {video}: the file must end in .gif or .mp4")
    if video.exists():
        raise ConfigError(f"--video {video} already exists; pick another path or delete it first")
    if video.suffix.lower() == ".mp4" and shutil.which("ffmpeg") is None:
        raise ConfigError(
            f"--video {video}: writing .mp4 needs ffmpeg, which is not on PATH; "
            "install it (apt-get install ffmpeg) or pass a .gif path"
        )


def _check_can_render(run_dir: Path) -> None:
    """Refuse --video, before the evaluation, for a run whose env reppo cannot draw."""
    from reppo.envs.catalog import family_of
    from reppo.envs.user import lookup
    from reppo.runs import open_run_dir

    env = Config.from_dict(open_run_dir(run_dir)).env
    family = family_of(env)
    if family == "dm_control":
        return
    if family == "maniskill":
        problem = "videos of ManiSkill3 tasks are not supported yet"
    else:
        entry = lookup(env)
        if entry is None or entry.backend != "jax":
            problem = ("videos are drawn by MuJoCo from a Playground task or a registered JAX "
                       "env, and it is a Gymnasium env")
        else:
            from reppo.envs.evaluation import video_problem

            problem = video_problem(env)
    if problem is not None:
        raise ConfigError(f"--video: reppo cannot render {env}: {problem}; evaluate without "
                          "--video")


def run(args: argparse.Namespace) -> int:
    if args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    if args.video is not None:
        _check_video_path(args.video)
    backend = run_backend(args.run_dir, args.backend)
    if args.video is not None:
        from reppo.runs.outputs import check_output_path

        # A missing, read-only or full directory is refused before the evaluation.
        check_output_path(args.video, "--video")
        _check_can_render(args.run_dir)
    enable_compilation_cache()
    if backend == "torch":
        from reppo.torch.policy import evaluate_run, record_run_video
    else:
        from reppo.jax.policy import evaluate_run, record_run_video

    report = evaluate_run(args.run_dir, episodes=args.episodes, seed=args.seed,
                          checkpoint=args.checkpoint)
    if args.video is not None:
        record_run_video(args.run_dir, args.video, seed=args.seed, checkpoint=args.checkpoint)
        report["video"] = str(args.video)
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{report['env']} at {report['env_steps']:,} env steps: return "
            f"{report['mean_return']:.1f} ± {report['std_return']:.1f} over "
            f"{report['episodes']} episodes"
        )
        if "video" in report:
            print(f"video written to {report['video']}")
    return 0
