"""`python -m depth_core convert`: videos to 3D for VR headsets, 3D TVs and coloured glasses.

    python -m depth_core convert clip.mp4 --model depth_anything_v2_vits.pth --to vr180 --out 3d/
    python -m depth_core convert clip.mp4 --depth clip_depth.mkv --to half-sbs --out 3d/
    python -m depth_core convert videos/ --depth depths/ --to full-sbs --out 3d/ --ray            # local Ray
    python -m depth_core convert videos/ --model FILE --out 3d/ --ray ray://head:10001            # a Ray cluster
    python -m depth_core convert tour360.mp4 --model depth_anything_v2_vits.pth --to 360-tb --out 3d/  # 360° video

A stopped run continues where it stopped when started again with the same arguments.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..anaglyph import METHODS
from ..cli import model_path
from ..panorama import OdsSettings
from ..stereo import FILL_MODES, StereoSettings
from ..video_io import CODECS, DEFAULT_QUALITY
from .depth_sources import DepthSpec
from .layouts import DEFAULT_VR180_FOV, FORMATS, PANORAMA_FORMAT
from .pipeline import CONTAINERS, NORMALIZE_MODES, ConversionError, ConvertOptions

LOCAL_RAY = "local"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m depth_core convert", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert videos to stereo 3D, streamed (memory does not grow with the length), resumable, "
                    "with the source's frame rate and audio. Output names carry the layout tag players detect "
                    f"({', '.join(f'{name}: {tag}' for name, tag in FORMATS.items())}).")
    parser.add_argument("inputs", nargs="+", type=Path, help="video files or folders of videos")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="depth network: a known file name or a checkpoint path")
    source.add_argument("--depth", type=Path,
                        help="depth made beforehand, near = bright: a depth video frame-aligned with the input (the "
                             "16-bit FFV1 MKV Depth Toolkit writes, or any grayscale video), a folder of 16-bit PNG "
                             "frames, or for several inputs a folder of depth videos named like them "
                             "(clip.mkv or clip_depth.mkv for clip.mp4)")
    parser.add_argument("--to", dest="format", default="full-sbs", choices=list(FORMATS), help="output layout "
                        f"(default full-sbs). {PANORAMA_FORMAT}: a 360° equirectangular video (2:1) as omni-"
                        "directional top-bottom stereo; --model then estimates each frame's depth in panorama mode "
                        "(an image network; video networks have none)")
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out)")
    parser.add_argument("--ray", nargs="?", const=LOCAL_RAY, default=None, metavar="ADDRESS",
                        help="run on a Ray cluster: each video and each segment of a long one becomes a task (one "
                             "GPU each when there are GPUs). No address: a local Ray; or ray://host:10001 / auto. "
                             "Needs the ray extra (pip install depth-toolkit[ray])")
    parser.add_argument("--ray-workers", type=int, default=None, metavar="N",
                        help="with --ray: at most N segments at once (default: as many as the cluster runs)")
    stereo = parser.add_argument_group("stereo (as the StereoSBS node)")
    defaults = StereoSettings()
    stereo.add_argument("--divergence", type=float, default=None,
                        help=f"3D strength, %% of the width for the nearest point (default {defaults.divergence:g}; "
                             f"{OdsSettings().divergence:g} for {PANORAMA_FORMAT}, whose width is 360°)")
    stereo.add_argument("--separation", type=float, default=defaults.separation, help="extra shift per eye, %% of width")
    stereo.add_argument("--convergence", type=float, default=defaults.convergence,
                        help="0..1: which depth is at the screen plane (0 farthest, 1 nearest)")
    stereo.add_argument("--balance", type=float, default=defaults.balance, help="-1..1: how the shift is split")
    stereo.add_argument("--depth-exponent", type=float, default=defaults.exponent, help="depth curve (1 = linear)")
    stereo.add_argument("--fill", default="background", choices=list(FILL_MODES), help="gap fill (default background)")
    stereo.add_argument("--normalize", default="frame", choices=list(NORMALIZE_MODES),
                        help="normalize relative depth per frame, or over the whole clip (steadier; one range "
                             "measured before converting)")
    stereo.add_argument("--swap-eyes", action="store_true", help="right eye first (cross-eyed viewing)")
    stereo.add_argument("--anaglyph-method", default="dubois red/cyan", choices=list(METHODS))
    stereo.add_argument("--vr180-fov", type=float, default=DEFAULT_VR180_FOV,
                        help=f"degrees the video spans inside the VR180 view (default {DEFAULT_VR180_FOV:g})")
    encode = parser.add_argument_group("encoding")
    encode.add_argument("--codec", default="h264", choices=list(CODECS),
                        help="h264 (libx264, plays everywhere), h265 (libx265, half the size) or av1 (libsvtav1)")
    encode.add_argument("--crf", type=int, default=None,
                        help="constant quality, lower = better (default " +
                             ", ".join(f"{codec} {crf}" for codec, crf in DEFAULT_QUALITY.items()) + ")")
    encode.add_argument("--preset", default=None, help="encoder speed preset (x264/x265: medium, fast...; svtav1: 0-13)")
    encode.add_argument("--pix-fmt", default="yuv420p",
                        help="pixel format (default yuv420p, what players decode in hardware; yuv420p10le for "
                             "10-bit h265/av1)")
    encode.add_argument("--container", default="mp4", choices=list(CONTAINERS),
                        help="mp4 (default; switched to mkv when the audio cannot go into mp4 unchanged) or mkv")
    encode.add_argument("--no-audio", action="store_true", help="leave the audio out")
    work = parser.add_argument_group("work")
    work.add_argument("--segment-seconds", type=float, default=30.0,
                      help="length of the keyframe-aligned segments a video is converted in (what a resumed run "
                           "keeps, and what Ray spreads; default 30)")
    work.add_argument("--chunk-frames", type=int, default=8, help="frames processed together (default 8)")
    work.add_argument("--models-dir", type=Path,
                      default=Path(os.environ.get("DEPTH_TOOLKIT_MODELS", "models/depth")),
                      help="where model files are looked for and downloaded to")
    work.add_argument("--no-download", action="store_true", help="never download a missing model")
    work.add_argument("--resolution", default="native", help="network input size: native or a number")
    work.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    work.add_argument("--threads", type=int, default=0,
                      help="torch CPU threads (default: torch's choice; 1 is fastest on a machine busy with other "
                           "work, where threads wait for each other)")
    args = parser.parse_args(argv)
    if args.depth is not None and args.depth.is_file() and len(args.inputs) > 1:
        parser.error("one depth video serves one input video; for several, give --depth a folder of depth videos "
                     "named like them")
    return args


def options_from(args: argparse.Namespace) -> ConvertOptions:
    divergence = args.divergence
    if divergence is None:
        divergence = OdsSettings().divergence if args.format == PANORAMA_FORMAT else StereoSettings().divergence
    settings = StereoSettings(divergence=divergence, separation=args.separation, convergence=args.convergence,
                              balance=args.balance, exponent=args.depth_exponent)
    return ConvertOptions(format=args.format, settings=settings, fill=args.fill, normalize=args.normalize,
                          anaglyph_method=args.anaglyph_method, swap_eyes=args.swap_eyes, vr180_fov=args.vr180_fov,
                          codec=args.codec, crf=args.crf, preset=args.preset, pixel_format=args.pix_fmt,
                          container=args.container, copy_audio=not args.no_audio,
                          segment_seconds=args.segment_seconds, chunk_frames=args.chunk_frames)


def depth_spec(args: argparse.Namespace) -> DepthSpec:
    if args.depth is not None:
        return DepthSpec(depth=str(args.depth))
    resolution = int(args.resolution) if args.resolution.isdigit() else None
    return DepthSpec(model=str(model_path(args)), resolution=resolution, device=args.device,
                     panorama=args.format == PANORAMA_FORMAT)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        options = options_from(args)
        spec = depth_spec(args)
        if args.ray is not None:
            from .ray_runner import convert_on_ray

            report = convert_on_ray(args.inputs, args.out, options, spec,
                                    address=None if args.ray == LOCAL_RAY else args.ray, max_parallel=args.ray_workers)
        else:
            from .pipeline import convert_videos

            interactive = sys.stderr.isatty()
            shown = {"percent": -5}

            def show(line: str) -> None:
                # A terminal gets one line redrawn in place; a log gets a line every 5 %.
                if interactive:
                    print(f"\r{line}", end="", flush=True, file=sys.stderr)
                    return
                percent = int(line.split("%")[0].split()[-1])
                if percent >= shown["percent"] + 5:
                    shown["percent"] = percent
                    print(line, file=sys.stderr, flush=True)

            report = convert_videos(args.inputs, args.out, options, spec.open(), device=spec.torch_device(),
                                    log=lambda line: print(f"\n{line}" if interactive else line),
                                    progress_line=show)
    except (ConversionError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for source, reason in report.failed.items():
        print(f"failed: {source}: {reason}", file=sys.stderr)
    print(f"converted {len(report.converted)}, skipped {len(report.skipped)} (already there), "
          f"failed {len(report.failed)}")
    return 1 if report.failed else 0
