"""Layered mesh of a 3D photo: triangles from the layered depth image, and its files (PLY, GLB, OBJ).

Each layer is a pixel-grid mesh (two triangles per cell) cut wherever neighbouring pixels jump in depth; the hidden
background layer shares its vertices with the visible layer where they meet, so the two form one surface behind
foreground edges.

PLY files follow the old depthmap extension (binary little-endian; `comment H/W/hFov/vFov/meanLoc` header; vertex
x, y, z float, red/green/blue/alpha uchar with alpha = 1 original, 2 inpainted, 5 border; faces as uchar count +
int indices) in its coordinates: x right, y down, z forward, so its video tools read them unchanged. GLB and OBJ
use this pack's convention (+Y up, -Z forward), which glTF viewers and Blender open upright.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..files import atomic_path
from ..image import image_to_uint8
from .layers import TAG_BORDER, TAG_INPAINTED, TAG_VISIBLE, LayeredDepthImage
from .render import Mesh


@dataclass(frozen=True)
class LayeredMesh:
    mesh: Mesh
    tags: torch.Tensor
    """[V] uint8 per vertex: 1 original pixel, 2 inpainted background, 5 border extension."""
    height: int
    width: int
    horizontal_fov: float
    """radians, of the photo"""
    vertical_fov: float
    mean_location: float


def _grid_triangles(height: int, width: int, index: torch.Tensor, usable: torch.Tensor,
                    smooth_h: torch.Tensor, smooth_v: torch.Tensor) -> torch.Tensor:
    """Faces [F,3] of a pixel-grid layer: cells split into (a, c, b) and (b, c, d), counter-clockwise seen from the
    camera; a triangle is kept when its three vertices are usable and its two axis-aligned edges do not jump."""
    a, b = index[:-1, :-1], index[:-1, 1:]
    c, d = index[1:, :-1], index[1:, 1:]
    ua, ub, uc, ud = usable[:-1, :-1], usable[:-1, 1:], usable[1:, :-1], usable[1:, 1:]
    first = ua & ub & uc & smooth_v[:, :-1] & smooth_h[:-1, :]
    second = ub & uc & ud & smooth_h[1:, :] & smooth_v[:, 1:]
    return torch.cat([torch.stack([a[first], c[first], b[first]], 1),
                      torch.stack([b[second], c[second], d[second]], 1)])


def _smooth_edges(distance: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    log_distance = distance.clamp_min(1e-6).log()
    smooth_h = (log_distance[:, 1:] - log_distance[:, :-1]).abs() <= threshold
    smooth_v = (log_distance[1:, :] - log_distance[:-1, :]).abs() <= threshold
    return smooth_h, smooth_v


def layered_mesh(ldi: LayeredDepthImage) -> LayeredMesh:
    """Vertices, colours and faces of both layers, plus what the PLY header needs."""
    height, width = ldi.size
    device = ldi.color.device
    rays = ldi.camera.pixel_rays(device)
    pixel_count = height * width

    visible_index = torch.arange(pixel_count, device=device).reshape(height, width)
    smooth_h, smooth_v = _smooth_edges(ldi.distance[0], ldi.threshold)
    visible_faces = _grid_triangles(height, width, visible_index, ldi.valid[0], smooth_h, smooth_v)

    hidden = ldi.inpainted
    hidden_count = int(hidden.sum())
    # Hidden-layer vertices are new where inpainted and shared with the visible layer at its background sources.
    background_index = visible_index.clone()
    background_index[hidden] = pixel_count + torch.arange(hidden_count, device=device)
    smooth_h, smooth_v = _smooth_edges(ldi.distance[1], ldi.threshold)
    hidden_faces = _grid_triangles(height, width, background_index, ldi.valid[1], smooth_h, smooth_v)
    # Cells made only of shared vertices would duplicate visible triangles.
    hidden_faces = hidden_faces[(hidden_faces >= pixel_count).any(1)]

    points = ldi.distance.unsqueeze(-1) * rays  # [2,H,W,3]
    vertices = torch.cat([points[0].reshape(-1, 3), points[1][hidden]])
    colors = torch.cat([ldi.color[0].permute(1, 2, 0).reshape(-1, 3), ldi.color[1].permute(1, 2, 0)[hidden]])
    tags = torch.full((pixel_count,), TAG_VISIBLE, dtype=torch.uint8, device=device)
    if ldi.border > 0:
        border = torch.ones(height, width, dtype=torch.bool, device=device)
        border[ldi.border:height - ldi.border, ldi.border:width - ldi.border] = False
        tags[border.flatten()] = TAG_BORDER
    tags = torch.cat([tags, torch.full((hidden_count,), TAG_INPAINTED, dtype=torch.uint8, device=device)])
    faces = torch.cat([visible_faces, hidden_faces])
    photo = ldi.photo_camera
    return LayeredMesh(Mesh(vertices, colors, faces), tags, photo.height, photo.width,
                       math.radians(photo.horizontal_fov_degrees), math.radians(photo.vertical_fov_degrees),
                       ldi.mean_location)


def _atomic_write(path: str, write) -> str:
    """Write through a temporary file in the same folder, then rename: a failure leaves no half-written file."""
    with atomic_path(path) as temporary:
        write(str(temporary))
    return path


def ply_header(layered: LayeredMesh, vertex_count: int, face_count: int) -> bytes:
    lines = [
        "ply", "format binary_little_endian 1.0",
        f"comment H {layered.height}", f"comment W {layered.width}",
        f"comment hFov {layered.horizontal_fov}", f"comment vFov {layered.vertical_fov}",
        f"comment meanLoc {layered.mean_location}",
        f"element vertex {vertex_count}",
        "property float x", "property float y", "property float z",
        "property uchar red", "property uchar green", "property uchar blue", "property uchar alpha",
        f"element face {face_count}", "property list uchar int vertex_index", "end_header",
    ]
    return ("\n".join(lines) + "\n").encode("ascii")


def write_ply(layered: LayeredMesh, path: str) -> str:
    """Binary little-endian PLY readable by the old extension's video tools (its coordinates: y down, z forward)."""
    vertices = layered.mesh.vertices.detach().cpu().numpy().astype(np.float32) * np.array([1, -1, -1], np.float32)
    colors = image_to_uint8(layered.mesh.colors)
    faces = layered.mesh.faces.detach().cpu().numpy().astype("<i4")
    vertex_records = np.empty(len(vertices), dtype=[("xyz", "<f4", 3), ("rgba", "u1", 4)])
    vertex_records["xyz"] = vertices
    vertex_records["rgba"][:, :3] = colors
    vertex_records["rgba"][:, 3] = layered.tags.cpu().numpy()
    face_records = np.empty(len(faces), dtype=[("count", "u1"), ("index", "<i4", 3)])
    face_records["count"] = 3
    face_records["index"] = faces

    def write(target: str) -> None:
        with open(target, "wb") as handle:
            handle.write(ply_header(layered, len(vertices), len(faces)))
            handle.write(vertex_records.tobytes())
            handle.write(face_records.tobytes())

    return _atomic_write(path, write)


def read_ply_header(path: str) -> dict[str, float]:
    """The H, W, hFov, vFov, meanLoc comments and element counts of a PLY written by `write_ply`."""
    values: dict[str, float] = {}
    with open(path, "rb") as handle:
        for raw in handle:
            line = raw.decode("ascii").strip()
            parts = line.split(" ")
            if parts[0] == "comment" and len(parts) == 3:
                values[parts[1]] = float(parts[2])
            elif parts[0] == "element":
                values[parts[1]] = float(parts[2])
            elif line == "end_header":
                break
    return values


def write_trimesh(layered: LayeredMesh, path: str) -> str:
    """GLB or OBJ (by extension) with vertex colours, through trimesh."""
    import trimesh

    extension = os.path.splitext(path)[1].lower().lstrip(".")
    if extension not in ("glb", "obj"):
        raise ValueError(f"Mesh files are .ply, .glb or .obj, got '{path}'.")
    colors = image_to_uint8(layered.mesh.colors)
    alpha = np.full((len(colors), 1), 255, np.uint8)
    mesh = trimesh.Trimesh(vertices=layered.mesh.vertices.detach().cpu().numpy(),
                           faces=layered.mesh.faces.detach().cpu().numpy(),
                           vertex_colors=np.concatenate([colors, alpha], 1), process=False)

    def write(target: str) -> None:
        data = mesh.export(file_type=extension)
        if extension == "obj":
            header = (f"# H {layered.height}\n# W {layered.width}\n# hFov {layered.horizontal_fov}\n"
                      f"# vFov {layered.vertical_fov}\n# meanLoc {layered.mean_location}\n")
            data = header + (data if isinstance(data, str) else data.decode("utf-8"))
        with open(target, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)

    return _atomic_write(path, write)


def write_mesh(layered: LayeredMesh, path: str) -> str:
    if path.lower().endswith(".ply"):
        return write_ply(layered, path)
    return write_trimesh(layered, path)


def core_mesh_arrays(layered: LayeredMesh) -> tuple[torch.Tensor, torch.Tensor]:
    """(vertices [1,V,3] float32, faces [1,F,3] int64) on the CPU, the layout of ComfyUI's MESH type."""
    return (layered.mesh.vertices.detach().float().cpu().unsqueeze(0),
            layered.mesh.faces.detach().long().cpu().unsqueeze(0))
