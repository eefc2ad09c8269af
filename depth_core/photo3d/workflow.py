"""The whole 3D-photo job for an image batch, as the node and the command line run it: layers and inpainting per
image, a camera-move clip per image, one video of all clips, one mesh file per image, and their file names.

Files appear together or not at all: everything is written under temporary names and renamed only when the last
clip is rendered and encoded, so a cancelled or failed batch leaves nothing half-done in the output folder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..camera import Pinhole, choose_fov
from ..depth import Depth, match_depth_to_images
from ..files import atomic_paths
from ..image import to_rgb
from ..progress import ProgressFn, no_progress
from . import DEFAULT_BAND_FRACTION, build_photo3d, photo_distance, render_path
from .layers import DEFAULT_RELATIVE_THRESHOLD, Inpainter
from .mesh import LayeredMesh, core_mesh_arrays, write_mesh
from .paths import camera_path

VIDEO_FORMATS = ("mp4", "webm", "none")
MESH_FORMATS = ("ply", "glb", "obj", "none")


@dataclass(frozen=True)
class Photo3DSettings:
    path: str = "circle"
    """Camera move, one of paths.PATH_NAMES."""
    frames: int = 90
    fps: float = 30.0
    translate: tuple[float, float, float] = (0.04, 0.02, 0.05)
    """Camera move (x, y, z) as fractions of the distance to the subject at the image centre."""
    crop: float = 0.0
    supersampling: int = 2
    fov: float = 0.0
    """Horizontal field of view in degrees; 0 = the depth's own camera, else camera.DEFAULT_FOV_DEGREES."""
    video_format: str = "mp4"
    mesh_format: str = "ply"
    edge_threshold: float = DEFAULT_RELATIVE_THRESHOLD
    background_extension: float = DEFAULT_BAND_FRACTION
    panorama: bool = False
    """The images are 360° equirectangular panoramas: cube-face meshes and a look-around video (fov is then the
    video's field of view, 0 = panorama.LOOK_AROUND_FOV_DEGREES; crop is not used)."""

    def validate(self) -> None:
        if self.video_format not in VIDEO_FORMATS:
            raise ValueError(f"Unknown video format {self.video_format!r}: choose one of {', '.join(VIDEO_FORMATS)}.")
        if self.mesh_format not in MESH_FORMATS:
            raise ValueError(f"Unknown mesh format {self.mesh_format!r}: choose one of {', '.join(MESH_FORMATS)}.")
        if self.frames < 1:
            raise ValueError(f"A 3D photo needs at least one frame, got {self.frames}.")

    def steps(self, batch: int) -> int:
        """Progress steps of a batch: one per image for its layers, one per rendered frame."""
        return batch * (self.frames + 1)


@dataclass
class Photo3DResult:
    frames: torch.Tensor
    """Every clip, one after the other: [batch * frames, H', W', 3] float 0..1 on the CPU."""
    video_path: Path | None
    mesh_paths: list[Path]
    first_mesh: tuple[torch.Tensor, torch.Tensor]
    """(vertices [1,V,3], faces [1,F,3]) of the first image's mesh, the layout of ComfyUI's MESH."""
    fov_sources: list[str]
    """Per image: which field of view was used and where it came from."""


def numbered_file_names(folder: str | os.PathLike, filename: str, counter: int, batch: int,
                        settings: Photo3DSettings) -> tuple[Path | None, list[Path]]:
    """(video, meshes) under ComfyUI's naming: <filename>_<counter>_.<ext>, one mesh per image counting up."""
    folder = Path(folder)
    video = folder / f"{filename}_{counter:05}_.{settings.video_format}" if settings.video_format != "none" else None
    meshes = [] if settings.mesh_format == "none" else \
        [folder / f"{filename}_{counter + index:05}_.{settings.mesh_format}" for index in range(batch)]
    return video, meshes


def load_inpainter(networks: tuple[Path, Path, Path] | None, device: torch.device | str) -> Inpainter | None:
    """The networks of Shih et al. when all three files were found (model_files.ModelFiles.inpainting_networks),
    else None: the hidden background is then filled without networks."""
    if networks is None:
        return None
    from .networks import load_context_aware_inpainter

    return load_context_aware_inpainter(*map(str, networks), device=device)


def _offset(progress: ProgressFn, start: int, total: int) -> ProgressFn:
    """One image's progress (done out of its own steps) as progress of the whole batch."""
    return lambda done, _: progress(start + done, total)


def photo_clip(rgb: torch.Tensor, distance: torch.Tensor, camera: Pinhole, settings: Photo3DSettings,
               inpainter: Inpainter | None, progress: ProgressFn) -> tuple[torch.Tensor, LayeredMesh]:
    """The camera-move clip [frames,H',W',3] and layered mesh of one photo [3,H,W] with its distance [H,W]."""
    ldi, layered = build_photo3d(rgb, distance, camera, band_fraction=settings.background_extension,
                                 relative_threshold=settings.edge_threshold, inpainter=inpainter)
    progress(1, settings.frames + 1)
    scale = ldi.mean_location
    moves = camera_path(settings.path, settings.frames, tuple(t * scale for t in settings.translate),
                        mean_location=scale)
    clip = render_path(layered.mesh, camera, moves, settings.supersampling, settings.crop,
                       progress=lambda i, n: progress(1 + i, settings.frames + 1))
    return clip, layered


def panorama_clip(rgb: torch.Tensor, distance: torch.Tensor, settings: Photo3DSettings,
                  inpainter: Inpainter | None, progress: ProgressFn) -> tuple[torch.Tensor, LayeredMesh]:
    """The look-around clip and layered mesh of one panorama (see panorama.panorama_photo3d)."""
    from ..panorama import LOOK_AROUND_FOV_DEGREES, look_around_frame_size, look_around_frames, panorama_photo3d

    layered = panorama_photo3d(rgb, distance, band_fraction=settings.background_extension,
                               relative_threshold=settings.edge_threshold, inpainter=inpainter)
    progress(1, settings.frames + 1)
    view_fov = settings.fov if settings.fov > 0 else LOOK_AROUND_FOV_DEGREES
    frame_width, frame_height = look_around_frame_size(rgb.shape[-1], view_fov)
    scale = layered.mean_location
    clip = look_around_frames(layered.mesh, settings.frames, frame_width, frame_height, view_fov, settings.path,
                              tuple(move * scale for move in settings.translate), settings.supersampling,
                              progress=lambda i, n: progress(1 + i, settings.frames + 1))
    return clip, layered


def make_photo3d(images: torch.Tensor, depth: Depth, settings: Photo3DSettings = Photo3DSettings(),
                 video_path: str | os.PathLike | None = None, mesh_paths: list[str | os.PathLike] = (),
                 device: torch.device | str = "cpu", inpainter: Inpainter | None = None,
                 progress: ProgressFn = no_progress) -> Photo3DResult:
    """3D photos for an IMAGE batch [B,H,W,C] and its depth (one map per image, or one for all): the video (when
    `video_path` is given) and one mesh per image (when `mesh_paths` are given), written all at once at the end."""
    from .video import write_video

    settings.validate()
    images = to_rgb(images)
    batch, height, width = images.shape[:3]
    if settings.panorama:
        from ..panorama import check_panorama

        check_panorama(images)
    if mesh_paths and len(mesh_paths) != batch:
        raise ValueError(f"Got {len(mesh_paths)} mesh file names for {batch} images.")
    depth = match_depth_to_images(depth, batch, (height, width))
    total = settings.steps(batch)
    outputs = [*mesh_paths, *([video_path] if video_path is not None else [])]
    clips, first_mesh, fov_sources = [], None, []
    with atomic_paths(outputs) as temporaries:
        for index in range(batch):
            rgb = images[index].permute(2, 0, 1).to(device)
            distance = photo_distance(depth, index).to(device)
            image_progress = _offset(progress, index * (settings.frames + 1), total)
            if settings.panorama:
                clip, layered = panorama_clip(rgb, distance, settings, inpainter, image_progress)
            else:
                fov_degrees, source = choose_fov(settings.fov, depth.fov_for(index))
                fov_sources.append(source)
                clip, layered = photo_clip(rgb, distance, Pinhole.from_fov(width, height, fov_degrees), settings,
                                           inpainter, image_progress)
            clips.append(clip.float().cpu())
            if mesh_paths:
                write_mesh(layered, str(temporaries[index]))
            if first_mesh is None:
                first_mesh = core_mesh_arrays(layered)
            del layered
        frames = torch.cat(clips)
        if video_path is not None:
            write_video(frames, str(temporaries[-1]), settings.fps, settings.video_format)
    return Photo3DResult(frames, Path(video_path) if video_path is not None else None, [Path(p) for p in mesh_paths],
                         first_mesh, fov_sources)
