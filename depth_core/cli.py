"""Command line: depth maps and their derived pictures for files or folders, without ComfyUI.

    python -m depth_core                         # weight-free demo on the Middlebury pair shipped by scikit-image
    python -m depth_core photo.jpg photos/ --model depth_anything_v2_vits.pth --out out/
    python -m depth_core photo.jpg --depth photo_depth.png --outputs sbs,anaglyph,mesh
    python -m depth_core photo.jpg --model depth_anything_v2_vits.pth --boost --outputs depth,photo3d
    python -m depth_core photo.jpg --model depth_anything_v2_vits.pth --outputs cutout,mask,mesh --mask-depth
    python -m depth_core clip.mp4 --model video_depth_anything_vits.pth --outputs depth --raw-depth --out out/
    python -m depth_core convert clip.mp4 --model depth_anything_v2_vits.pth --to vr180 --out 3d/   # videos to 3D
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .camera import choose_fov
from .depth import Depth, DepthKind, match_depth_to_images
from .files import atomic_path
from .image import image_to_uint8, numpy_to_image, psnr_uint8
from .video_io import is_video_path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
ALL_OUTPUTS = ("depth", "normal", "sbs", "anaglyph", "mesh", "photo3d", "cutout", "mask")
DEFAULT_OUTPUTS = "depth,normal,sbs,anaglyph"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m depth_core",
        description="Depth maps and what they make possible (16-bit depth PNG, normal map, stereo side-by-side, "
                    "anaglyph, textured mesh). With no input, runs the weight-free pipeline on the real Middlebury "
                    "stereo pair shipped by scikit-image (left photo + its ground-truth disparity).")
    parser.add_argument("inputs", nargs="*", type=Path,
                        help="image or video files (mp4, mkv, webm, mov), or folders of them")
    parser.add_argument("--model", help="depth model: a known file name (e.g. depth_anything_v2_vits.pth) or a "
                                        "checkpoint path; downloaded into --models-dir when missing")
    parser.add_argument("--depth", type=Path, help="use this depth map (PNG/EXR/NPY, near = bright) instead of a "
                                                   "model; only with a single input image")
    parser.add_argument("--models-dir", type=Path, default=Path(os.environ.get("DEPTH_TOOLKIT_MODELS", "models/depth")),
                        help="where model files are looked for and downloaded to (default: models/depth, or "
                             "$DEPTH_TOOLKIT_MODELS)")
    parser.add_argument("--no-download", action="store_true", help="never download a missing model")
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out)")
    parser.add_argument("--outputs", default=DEFAULT_OUTPUTS,
                        help=f"comma-separated subset of {','.join(ALL_OUTPUTS)} (default: {DEFAULT_OUTPUTS})")
    parser.add_argument("--resolution", default="native",
                        help="network input size: native, match, or a number (default: native)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default: auto)")
    parser.add_argument("--divergence", type=float,
                        help="stereo strength, %% of width (default 2.5; 0.75 for --panorama, whose width is 360°)")
    parser.add_argument("--panorama", nargs="?", const="icosahedral", choices=("icosahedral", "cube"),
                        help="the inputs are 360° equirectangular panoramas (2:1): depth from overlapping perspective "
                             "views (icosahedral, the default, or cube), seamless all around; sbs becomes top-bottom "
                             "360° stereo (<name>_360_TB.png), the mesh a sphere; no normal map")
    parser.add_argument("--raw-depth", action="store_true",
                        help="videos: also write <name>_depth.npy, the raw float32 [T,H,W] model output, frame by "
                             "frame (memory-mappable)")
    parser.add_argument("--variant", default="auto",
                        help="what a Depth Anything file holds when its name does not say: relative, v1 relative, "
                             "metric indoor (max 20 m), metric outdoor (max 80 m) (default: auto, from the name)")
    parser.add_argument("--tileable", action="store_true",
                        help="the images are textures that repeat: depth that tiles without a seam")
    parser.add_argument("--fov", type=float, default=0.0,
                        help="horizontal field of view of the photos in degrees, when known; sets the camera of the "
                             "normal map, stereo, mesh and 3D photo and the metres of Depth Pro / DA3 Metric "
                             "(default: Depth Pro's estimate, a depth file's recorded one, else 55)")
    parser.add_argument("--steps", type=int, help="Marigold: denoising steps (default: the model's own)")
    parser.add_argument("--ensemble", type=int, default=1, help="Marigold: predictions averaged per image (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="Marigold: seed of the starting noise (default 0)")
    parser.add_argument("--video-mode", default="windows", choices=("windows", "streaming"),
                        help="Video Depth Anything on videos: windows (the authors' offline 32-frame windows, the "
                             "most consistent) or streaming (one frame at a time with cached temporal state, lower "
                             "latency); image models are stabilized over a sliding window instead")
    add_node_options(parser)
    args = parser.parse_args(argv)
    args.outputs = [name.strip() for name in args.outputs.split(",") if name.strip()]
    unknown = sorted(set(args.outputs) - set(ALL_OUTPUTS))
    if unknown:
        parser.error(f"unknown output(s) {', '.join(unknown)}; choose from {', '.join(ALL_OUTPUTS)}")
    if args.inputs and not (args.model or args.depth):
        parser.error("give --model (a depth network) or --depth (a depth map) for your images")
    if args.depth and len(args.inputs) != 1:
        parser.error("--depth needs exactly one input image")
    if args.boost and not args.model:
        parser.error("--boost refines a depth network's estimate: give --model")
    return args


def add_node_options(parser: argparse.ArgumentParser) -> None:
    """What the Boost Merge, Remove Background, Mask Depth and 3D Photo nodes offer, as options."""
    from .model_files import MERGE_METHODS
    from .photo3d.paths import PATH_NAMES

    boost = parser.add_argument_group("high-resolution depth (Boost Merge)")
    boost.add_argument("--boost", action="store_true",
                       help="estimate at several resolutions and merge patches (Miangoleh et al.): sharper, slower")
    boost.add_argument("--merge", default="auto", choices=MERGE_METHODS,
                       help="auto: the authors' pix2pix network when latest_net_G.pth is in --models-dir, else the "
                            "weight-free frequency split; pix2pix downloads it (default: auto)")
    boost.add_argument("--max-whole-size", type=int, default=1600,
                       help="largest size the whole image is estimated at (default 1600)")
    background = parser.add_argument_group("background removal (outputs cutout, mask; --mask-depth)")
    background.add_argument("--background-model", default="isnet-general-use",
                            help="a rembg model name or an .onnx file in the rembg folder beside --models-dir "
                                 "(default: isnet-general-use)")
    background.add_argument("--mask-depth", action="store_true",
                            help="set the depth's background to the subject's farthest depth before the other "
                                 "outputs (meshes and 3D photos of the subject alone)")
    photo3d = parser.add_argument_group("3D photo (output photo3d: <name>_photo3d.mp4 and a layered mesh)")
    photo3d.add_argument("--camera-path", default="circle", choices=PATH_NAMES, help="camera move (default: circle)")
    photo3d.add_argument("--frames", type=int, default=90, help="frames of the video (default 90)")
    photo3d.add_argument("--fps", type=float, default=30.0, help="frames per second (default 30)")
    photo3d.add_argument("--video-format", default="mp4", choices=("mp4", "webm"), help="default: mp4")
    photo3d.add_argument("--photo3d-mesh", default="ply", choices=("ply", "glb", "obj", "none"),
                         help="mesh file of the 3D photo (default: ply, readable by the old extension's tools)")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def list_images(inputs: list[Path]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES or is_video_path(p))
        elif item.is_file():
            files.append(item)
        else:
            raise SystemExit(f"error: {item} does not exist")
    if not files:
        raise SystemExit("error: no images found in the given inputs")
    return files


def read_image(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as image:
        return numpy_to_image(np.asarray(image.convert("RGB")))


def write_png(path: Path, image: torch.Tensor) -> Path:
    from PIL import Image

    with atomic_path(path) as temporary:
        Image.fromarray(image_to_uint8(image)).save(temporary, format="PNG")
    return path


def model_files(args: argparse.Namespace):
    """The resolver the nodes use too, over the command line's folders."""
    from .model_files import ModelFiles, ModelFolders

    folders = ModelFolders.of([args.models_dir], [args.models_dir.parent / "rembg"],
                              [args.models_dir.parent / "pix2pix"])
    return ModelFiles(folders, allow_download=not args.no_download, progress=print_progress("download"))


def model_path(args: argparse.Namespace) -> Path:
    """The file of --model: a path, or a known model found (or downloaded) in --models-dir."""
    from .loading import ModelFileMissingError
    from .registry import known_models

    candidate = Path(args.model)
    if candidate.is_file() or candidate.is_dir():  # a checkpoint, or a Marigold diffusers folder
        return candidate
    try:
        return Path(model_files(args).depth_network(args.model))
    except (ModelFileMissingError, ValueError) as error:
        raise SystemExit(f"error: {error} Known models: {', '.join(known_models())}") from error


def load_estimator(args: argparse.Namespace):
    from .registry import build_estimator

    try:
        return build_estimator(model_path(args), device=pick_device(args.device), variant=args.variant)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error


def print_progress(label: str) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        if total and (done == total or done % max(1, total // 20) == 0):
            print(f"\r{label}: {100 * done // total:3d}%", end="\n" if done == total else "", flush=True)

    return report


def write_outputs(stem: str, image: torch.Tensor, depth: Depth, args: argparse.Namespace) -> list[Path]:
    """Every requested output for one image [1,H,W,3] and its depth."""
    from .anaglyph import anaglyph
    from .depth_io import save_depth_png16
    from .mesh import depth_to_mesh, save_mesh
    from .normals import normal_map
    from .stereo import StereoSettings, compose_layout, stereo_pair

    args.out.mkdir(parents=True, exist_ok=True)
    depth = match_depth_to_images(depth, 1, tuple(image.shape[1:3]))
    depth, written = write_background_outputs(stem, image, depth, args)
    if "photo3d" in args.outputs:
        written += write_photo3d(stem, image, depth, args)
    if getattr(args, "panorama", None):
        return written + write_panorama_outputs(stem, image, depth, args)
    if "depth" in args.outputs:
        written.append(save_depth_png16(args.out / f"{stem}_depth.png", depth))
    fov, source = choose_fov(args.fov, depth.fov_for(0))
    if {"normal", "sbs", "anaglyph", "mesh"} & set(args.outputs):
        print(f"{stem}: {source}")
    if "normal" in args.outputs:
        written.append(write_png(args.out / f"{stem}_normal.png", normal_map(depth, fov_degrees=fov)[0]))
    if "sbs" in args.outputs or "anaglyph" in args.outputs:
        strength = {} if args.divergence is None else {"divergence": args.divergence}
        settings = StereoSettings(fov_degrees=fov, **strength)
        left, right = stereo_pair(image.permute(0, 3, 1, 2), depth, settings)
        left_view, right_view = left.images.permute(0, 2, 3, 1), right.images.permute(0, 2, 3, 1)
        if "sbs" in args.outputs:
            written.append(write_png(args.out / f"{stem}_sbs.png", compose_layout(left_view, right_view, "side-by-side")[0]))
        if "anaglyph" in args.outputs:
            written.append(write_png(args.out / f"{stem}_anaglyph.png", anaglyph(left_view, right_view)[0]))
    if "mesh" in args.outputs:
        mesh = depth_to_mesh(image[0], depth, fov_degrees=fov)
        written.append(Path(save_mesh(mesh, args.out / f"{stem}_mesh.glb")[0]))
    return written


def write_background_outputs(stem: str, image: torch.Tensor, depth: Depth,
                             args: argparse.Namespace) -> tuple[Depth, list[Path]]:
    """<name>_cutout.png (RGBA) and <name>_mask.png (white = subject) with --background-model, and the depth with
    its background set far (--mask-depth); the depth unchanged when none of them is asked for."""
    if not ({"cutout", "mask"} & set(args.outputs) or args.mask_depth):
        return depth, []
    from .background import known_contract, load_network, mask_depth, remove_background

    device = pick_device(args.device)
    try:
        path = model_files(args).background_model(args.background_model)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error
    network = load_network(path, known_contract(args.background_model), device)
    cutouts, masks = remove_background(network, image, device=device).stacked()
    written = []
    if "cutout" in args.outputs:
        written.append(write_png(args.out / f"{stem}_cutout.png", cutouts[0]))
    if "mask" in args.outputs:
        written.append(write_png(args.out / f"{stem}_mask.png", masks[0]))
    return (mask_depth(depth, masks.cpu()) if args.mask_depth else depth), written


def write_photo3d(stem: str, image: torch.Tensor, depth: Depth, args: argparse.Namespace) -> list[Path]:
    """<name>_photo3d.<mp4|webm> (the camera move) and <name>_photo3d.<ply|glb|obj> (the layered, inpainted mesh)."""
    from .photo3d.workflow import Photo3DSettings, load_inpainter, make_photo3d

    settings = Photo3DSettings(path=args.camera_path, frames=args.frames, fps=args.fps, fov=args.fov,
                               video_format=args.video_format, mesh_format=args.photo3d_mesh,
                               panorama=bool(getattr(args, "panorama", None)))
    device = pick_device(args.device)
    meshes = [] if args.photo3d_mesh == "none" else [args.out / f"{stem}_photo3d.{args.photo3d_mesh}"]
    inpainter = load_inpainter(model_files(args).inpainting_networks(), device)
    try:
        result = make_photo3d(image, depth, settings, args.out / f"{stem}_photo3d.{args.video_format}", meshes,
                              device, inpainter, print_progress(f"{stem} 3D photo"))
    except ValueError as error:
        raise SystemExit(f"error: {stem}: {error}") from error
    return [result.video_path, *result.mesh_paths]


def boost_image(estimator, image: torch.Tensor, args: argparse.Namespace) -> Depth:
    """Boost Merge of one image (--boost), with the merge network --merge chooses."""
    from .boost import BoostSettings, boost_depth, merger_for

    merger = merger_for(model_files(args).merge_network(args.merge))
    generator = getattr(merger, "generator", None)
    if generator is not None:
        generator.to(estimator.device)
    depth, report = boost_depth(estimator, image.permute(0, 3, 1, 2), merger,
                                BoostSettings(max_whole_size=args.max_whole_size), progress=print_progress("boost"))
    print(report.describe())
    return depth


def write_panorama_outputs(stem: str, image: torch.Tensor, depth: Depth, args: argparse.Namespace) -> list[Path]:
    """The outputs of one 360° panorama: depth, top-bottom ODS stereo named for VR players, anaglyph, sphere mesh."""
    from .anaglyph import anaglyph
    from .depth_io import save_depth_png16
    from .mesh import depth_to_mesh, save_mesh
    from .panorama import PANORAMA_STEREO_TAG, OdsSettings, ods_views
    from .stereo import compose_layout

    written: list[Path] = []
    if "depth" in args.outputs:
        written.append(save_depth_png16(args.out / f"{stem}_depth.png", depth))
    if "normal" in args.outputs:
        print(f"{stem}: no normal map for a panorama (normals need a perspective camera); skipped")
    if "sbs" in args.outputs or "anaglyph" in args.outputs:
        settings = OdsSettings() if args.divergence is None else OdsSettings(divergence=args.divergence)
        left, right = ods_views(image, depth, settings)
        if "sbs" in args.outputs:
            tb = compose_layout(left, right, "top-bottom")[0]
            written.append(write_png(args.out / f"{stem}{PANORAMA_STEREO_TAG}.png", tb))
        if "anaglyph" in args.outputs:
            written.append(write_png(args.out / f"{stem}_anaglyph.png", anaglyph(left, right)[0]))
    if "mesh" in args.outputs:
        mesh = depth_to_mesh(image[0], depth, projection="equirectangular")
        written.append(Path(save_mesh(mesh, args.out / f"{stem}_mesh.glb")[0]))
    return written


def print_frames(label: str) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        print(f"\r{label}: frame {done}/{total}", end="\n" if done == total else "", flush=True)

    return report


def write_video_outputs(path: Path, estimator, resolution, args: argparse.Namespace) -> None:
    """<name>_depth.mkv (16-bit lossless, near = bright) and, with --raw-depth, <name>_depth.npy for a video."""
    from .video_depth import write_video_depth
    from .video_io import VideoReadError

    if estimator is None:
        raise SystemExit(f"error: {path}: a video needs --model (--depth takes one depth map for one image)")
    skipped = [name for name in args.outputs if name != "depth"]
    if skipped:
        print(f"{path.name}: only depth is made for videos here; skipped {', '.join(skipped)} (3D videos: "
              "python -m depth_core convert)")
    raw = args.out / f"{path.stem}_depth.npy" if args.raw_depth else None
    try:
        result = write_video_depth(estimator, path, args.out / f"{path.stem}_depth.mkv", raw=raw,
                                   resolution=resolution, mode=args.video_mode,
                                   progress=print_frames(path.name))
    except (VideoReadError, ValueError) as error:
        raise SystemExit(f"error: {path}: {error}") from error
    if result.info.variable_frame_rate:
        print(f"{path.name}: variable frame rate; depth has one frame per source frame at a constant "
              f"{float(result.info.fps):.3f} fps")
    for written in (result.depth_video, result.raw):
        if written is not None:
            print(f"wrote {written}")


def stereo_demo() -> tuple[torch.Tensor, Depth, torch.Tensor]:
    """The Middlebury motorcycle: left photo, its ground-truth disparity as depth, and the real right photo."""
    from skimage import data

    from .stereo import fill_invalid_along_rows

    left, right, disparity = data.stereo_motorcycle()
    filled = fill_invalid_along_rows(torch.from_numpy(np.asarray(disparity, dtype=np.float32))[None])
    return numpy_to_image(left), Depth(filled, DepthKind.RELATIVE_INVERSE, "middlebury ground truth"), \
        numpy_to_image(right)


def right_view_psnr(left: torch.Tensor, disparity: torch.Tensor, right: torch.Tensor) -> float:
    """PSNR (uint8, all pixels) of the right view synthesized from the left photo and its disparity."""
    from .stereo import warp_by_disparity

    synthesized = warp_by_disparity(left.permute(0, 3, 1, 2), disparity, "right").images.permute(0, 2, 3, 1)
    return psnr_uint8(image_to_uint8(synthesized[0]), image_to_uint8(right[0]))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["convert"]:   # videos to 3D: its own options (depth_core/convert/cli.py)
        from .convert.cli import main as convert_main

        return convert_main(argv[1:])
    args = parse_args(argv)
    if not args.inputs:
        left, depth, right = stereo_demo()
        print(f"demo: Middlebury motorcycle {left.shape[2]}x{left.shape[1]}, ground-truth disparity as depth")
        print(f"demo: right view synthesized from the left photo: {right_view_psnr(left, depth.values, right):.2f} dB "
              "PSNR against the real right photo")
        for path in write_outputs("motorcycle", left, depth, args):
            print(f"wrote {path}")
        return 0
    estimator = None if args.depth else load_estimator(args)
    resolution = {"native": None, "match": "match"}.get(args.resolution) or \
        (int(args.resolution) if args.resolution.isdigit() else None)
    for path in list_images(args.inputs):
        if is_video_path(path):
            write_video_outputs(path, estimator, resolution, args)
            continue
        image = read_image(path)
        if args.depth:
            from .depth_io import load_depth

            depth = load_depth(args.depth)
        elif args.panorama:
            from .panorama import estimate_panorama_depth

            try:
                depth, _ = estimate_panorama_depth(estimator, image, resolution, args.panorama,
                                                   progress=print_progress(f"{path.name} views"))
            except ValueError as error:
                raise SystemExit(f"error: {path}: {error}") from error
        else:
            depth = estimate_image(estimator, image, resolution, args)
        for written in write_outputs(path.stem, image, depth, args):
            print(f"wrote {written}")
    return 0


def estimate_image(estimator, image: torch.Tensor, resolution, args: argparse.Namespace) -> Depth:
    """Depth of one image, seamless with --tileable; Marigold models get --steps/--ensemble/--seed."""
    from .models.marigold import MarigoldEstimator, MarigoldSettings
    from .tiling import tileable_depth

    if args.boost:
        return boost_image(estimator, image, args)
    settings = {}
    if isinstance(estimator, MarigoldEstimator):
        settings["settings"] = MarigoldSettings(args.steps, args.ensemble, None, args.seed)
    elif args.fov:
        settings["fov_degrees"] = args.fov
    if args.tileable:
        depth = tileable_depth(estimator, image, resolution, **settings)
    else:
        depth = estimator.predict(image, resolution, **settings)
    return depth.with_fov(args.fov) if args.fov else depth


if __name__ == "__main__":
    sys.exit(main())
