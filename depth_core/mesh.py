"""Depth map + photo -> textured triangle mesh (GLB, OBJ+MTL+PNG, PLY) that opens upright in Blender and ComfyUI.

Geometry follows depth_core.camera: camera at the origin looking down -Z, +X right, +Y up, metres for metric depth
(scene units for relative depth). Every kept pixel of a (possibly decimated) grid becomes a vertex and every grid cell
two triangles; triangles that stretch across a depth discontinuity are dropped, or (keep_background) rebuilt on the
background surface behind the foreground so the scene has no holes when seen from the side.

UVs are stored in image convention: u = (x + 0.5) / W to the right, v = (y + 0.5) / H downwards from the top-left
corner, which is glTF's convention and what core ComfyUI's MESH type uses; `save_mesh` converts for trimesh.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .camera import DEFAULT_FOV_DEGREES, Pinhole
from .depth import Depth, distance
from .files import write_files_atomic
from .image import image_to_uint8, to_rgb

PROJECTIONS = ("perspective", "equirectangular")
FORMATS = ("glb", "obj", "ply")
DEFAULT_DISCONTINUITY_THRESHOLD = 0.15
"""Largest log-depth span inside one triangle (0.15 = the far corner is ~16 % farther than the near one)."""
DEFAULT_RESOLUTION = 1024
"""Vertices along the longer image side: 1024 keeps ~1.5 M triangles for a 4:3 photo of any size."""


@dataclass(frozen=True)
class DepthMesh:
    """A single triangle mesh with its texture, all tensors on the CPU.

    vertices [N,3] float32 (camera space, +Y up, -Z forward); faces [M,3] int64, counter-clockwise seen from the
    camera; uvs [N,2] float32 in image convention (origin top-left, v down); vertex_colors [N,3] float32 0..1;
    texture [H,W,3] float32 0..1 (the full-resolution photo).
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    uvs: torch.Tensor
    vertex_colors: torch.Tensor
    texture: torch.Tensor

    @property
    def vertex_count(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def face_count(self) -> int:
        return int(self.faces.shape[0])


def grid_size(height: int, width: int, resolution: int | None) -> tuple[int, int]:
    """(rows, columns) of the vertex grid: `resolution` vertices along the longer side, never more than pixels.

    None or 0 keeps one vertex per pixel.
    """
    if not resolution or resolution >= max(height, width):
        return height, width
    if resolution < 2:
        raise ValueError(f"Mesh resolution must be at least 2 vertices (or 0 for one per pixel), got {resolution}.")
    scale = resolution / max(height, width)
    return max(2, min(height, round(height * scale))), max(2, min(width, round(width * scale)))


def _sample_positions(size: int, count: int, wrap: bool, device: torch.device) -> torch.Tensor:
    """Pixel indices of `count` evenly spread samples: both ends included, or (wrap) a uniform step around a circle."""
    if count >= size:
        return torch.arange(size, device=device)
    if wrap:
        return torch.arange(count, device=device) * size // count
    return torch.linspace(0, size - 1, count, device=device).round().long()


def _depth_at_pixels(depth: Depth, rows: torch.Tensor, cols: torch.Tensor, height: int, width: int) -> Depth:
    """The depth at the given pixels of a height x width image, [1,rows,cols].

    A depth of another size is sampled bilinearly at those pixel centres, which gives exactly what resizing it to
    the image (match_depth_to_images) and then picking the pixels would, without building the full-size map.
    """
    if depth.size == (height, width):
        return depth.with_values(depth.values[:, rows][:, :, cols])
    x = (cols.float() + 0.5) / width * 2.0 - 1.0
    y = (rows.float() + 0.5) / height * 2.0 - 1.0
    grid_y, grid_x = torch.meshgrid(y, x, indexing="ij")
    grid = torch.stack([grid_x, grid_y], dim=-1)[None].to(depth.values.dtype)
    sampled = F.grid_sample(depth.values[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return depth.with_values(sampled[:, 0])


def _perspective_rays(camera: Pinhole, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """[h,w,3] rays with z = -1 through the centres of the sampled pixels (same convention as Pinhole.pixel_rays)."""
    x = (cols.float() + 0.5 - camera.cx) / camera.fx
    y = -(rows.float() + 0.5 - camera.cy) / camera.fy
    grid_y, grid_x = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([grid_x, grid_y, -torch.ones_like(grid_x)], dim=-1)


def _sphere_directions(height: int, width: int, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """[h,w,3] unit directions of the sampled pixels (same convention as camera.equirectangular_directions)."""
    longitude = (cols.float() + 0.5) / width * 2.0 * math.pi - math.pi
    latitude = math.pi / 2.0 - (rows.float() + 0.5) / height * math.pi
    lat, lon = torch.meshgrid(latitude, longitude, indexing="ij")
    return torch.stack([torch.cos(lat) * torch.sin(lon), torch.sin(lat), -torch.cos(lat) * torch.cos(lon)], dim=-1)


def _grid_faces(rows: int, cols: int, device: torch.device) -> torch.Tensor:
    """[2*(rows-1)*(cols-1), 3] triangles of a row-major vertex grid, counter-clockwise seen from the camera.

    Cell (r, c) gives (top-left, bottom-left, top-right) then (top-right, bottom-left, bottom-right): image rows grow
    downwards while +Y is up, so this order winds counter-clockwise. Built as one broadcast add of corner offsets.
    """
    top_left = torch.arange(rows * cols, device=device).view(rows, cols)[:-1, :-1]
    offsets = torch.tensor([[0, cols, 1], [1, cols, cols + 1]], device=device)
    return (top_left[..., None, None] + offsets).reshape(-1, 3)


def _triangle_log_spans(grid_log: torch.Tensor) -> torch.Tensor:
    """Per triangle (in _grid_faces order) the largest minus the smallest log-distance of its corners.

    Worked out on the grid with shifted views instead of gathering through the face indices: same numbers, several
    times faster on large grids.
    """
    top_left, top_right = grid_log[:-1, :-1], grid_log[:-1, 1:]
    bottom_left, bottom_right = grid_log[1:, :-1], grid_log[1:, 1:]
    shared_high = torch.maximum(top_right, bottom_left)
    shared_low = torch.minimum(top_right, bottom_left)
    first = torch.maximum(shared_high, top_left) - torch.minimum(shared_low, top_left)
    second = torch.maximum(shared_high, bottom_right) - torch.minimum(shared_low, bottom_right)
    return torch.stack([first, second], dim=-1).reshape(-1)


def _background_depth(grid_distance: torch.Tensor) -> torch.Tensor:
    """Farthest distance among each grid vertex's 3x3 neighbours: where the surface behind a foreground edge lies."""
    return F.max_pool2d(grid_distance[None, None], kernel_size=3, stride=1, padding=1)[0, 0]


def _compact(vertices: torch.Tensor, attributes: list[torch.Tensor], faces: torch.Tensor):
    """Drop vertices no face uses and renumber the faces."""
    used = torch.zeros(vertices.shape[0], dtype=torch.bool, device=vertices.device)
    used[faces.reshape(-1)] = True
    if bool(used.all()):
        return vertices, attributes, faces
    new_index = torch.cumsum(used, 0) - 1
    kept = used.nonzero().squeeze(1)
    return (vertices.index_select(0, kept), [a.index_select(0, kept) for a in attributes],
            new_index.take(faces))


def _require_finite(grid_depth: Depth) -> None:
    if not bool(torch.isfinite(grid_depth.values).any()):
        raise ValueError("The depth map has no finite value (all NaN or infinite): check the depth input.")


def depth_to_mesh(
    image: torch.Tensor,
    depth: Depth,
    fov_degrees: float = DEFAULT_FOV_DEGREES,
    projection: str = "perspective",
    near: float = 1.0,
    far: float = 10.0,
    discontinuity_threshold: float = DEFAULT_DISCONTINUITY_THRESHOLD,
    keep_background: bool = False,
    resolution: int | None = DEFAULT_RESOLUTION,
    simplify_to_faces: int | None = None,
    device: torch.device | str = "cpu",
) -> DepthMesh:
    """Back-project one image and its depth into a textured mesh.

    image: [H,W,C] float 0..1 (C = 1..4; gray is repeated, alpha dropped). depth: a single-item Depth of any size
    (resized to the image). Relative inverse depth is placed between `near` and `far` scene units
    (depth_core.depth.distance); metric depth keeps its metres and ignores near/far.
    projection "perspective" uses a pinhole with `fov_degrees` horizontal field of view and depth along the optical
    axis; "equirectangular" treats the image as a 360x180 degree panorama and depth as the distance from the centre.
    discontinuity_threshold: triangles whose corners' log-distances span more than this are cut (0 keeps all);
    keep_background rebuilds the cut triangles on the surface behind instead of leaving a hole.
    resolution: vertices along the longer side (0/None = one per pixel); the texture keeps full resolution.
    simplify_to_faces: quadric simplification down to about this many triangles (needs the fast-simplification
    package; perspective only).
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"Unknown projection {projection!r}: use one of {', '.join(PROJECTIONS)}.")
    if image.ndim != 3:
        raise ValueError(f"depth_to_mesh takes one image [H,W,C], got shape {tuple(image.shape)}.")
    rgb = to_rgb(image[None].float())[0].cpu()
    height, width = rgb.shape[:2]
    if height < 2 or width < 2:
        raise ValueError(f"The image is {width}x{height} pixels; a mesh needs at least 2x2 pixels. "
                         "Use a larger image (or upscale it first).")
    if discontinuity_threshold < 0:
        raise ValueError(f"discontinuity_threshold must be 0 (keep every triangle) or more, got {discontinuity_threshold}.")
    if simplify_to_faces and projection == "equirectangular":
        raise ValueError("Quadric simplification is only available for perspective meshes; set simplify_to_faces to "
                         "0 and lower the mesh resolution instead for panoramas.")
    if depth.batch_size != 1:
        raise ValueError(f"depth_to_mesh takes one depth map, got a batch of {depth.batch_size}; "
                         "call it once per image.")
    device = torch.device(device)

    wrap = projection == "equirectangular"
    grid_rows, grid_cols = grid_size(height, width, resolution)
    rows = _sample_positions(height, grid_rows, False, device)
    cols = _sample_positions(width, grid_cols, wrap, device)
    if wrap:
        # Close the 360 degree seam with a copy of the first column whose u is 1 instead of 0.
        cols = torch.cat([cols, cols[:1]])
    # Only the grid's pixels are read from the depth, so a 12 MP photo costs no 12 MP depth work. The relative
    # depth's near..far range is then spread over the sampled values (nearest vertex at `near`).
    grid_depth = _depth_at_pixels(depth.to(device), rows, cols, height, width)
    _require_finite(grid_depth)
    grid_distance = distance(grid_depth, near, far)[0].float()
    if wrap:
        rays = _sphere_directions(height, width, rows, cols)
    else:
        rays = _perspective_rays(Pinhole.from_fov(width, height, fov_degrees), rows, cols)
    grid_rows, grid_cols = rays.shape[:2]

    u = (cols.float() + 0.5) / width
    if wrap:
        u[-1] = 1.0
    v = (rows.float() + 0.5) / height
    grid_v, grid_u = torch.meshgrid(v, u, indexing="ij")
    uvs = torch.stack([grid_u, grid_v], dim=-1).reshape(-1, 2)
    flat_rays = rays.reshape(-1, 3)
    flat_distance = grid_distance.reshape(-1)
    vertices = flat_rays * flat_distance[:, None]
    colors = rgb[rows.cpu()][:, cols.cpu()].reshape(-1, 3).to(device)

    faces = _grid_faces(grid_rows, grid_cols, device)
    if discontinuity_threshold > 0:
        span = _triangle_log_spans(grid_distance.log())
        cut = span > discontinuity_threshold
        if bool(cut.any()):
            kept = faces.index_select(0, (~cut).nonzero().squeeze(1))
            if keep_background:
                cut_faces = faces.index_select(0, cut.nonzero().squeeze(1))
                rebuilt, extra = _rebuild_on_background(cut_faces, flat_distance.log().take(cut_faces),
                                                        discontinuity_threshold, vertices.shape[0])
                background = _background_depth(grid_distance).reshape(-1)
                vertices = torch.cat([vertices, flat_rays[extra] * background[extra, None]])
                uvs = torch.cat([uvs, uvs[extra]])
                colors = torch.cat([colors, colors[extra]])
                kept = torch.cat([kept, rebuilt])
            if kept.shape[0] == 0:
                raise ValueError(
                    f"discontinuity_threshold={discontinuity_threshold:g} removed every triangle. Raise it (the largest "
                    f"log-depth step in this depth map is {float(span.max()):.3g}), set it to 0 to keep every "
                    "triangle, or turn on keep_background.")
            faces = kept
    if wrap:
        vertices, uvs, colors, faces = _close_poles(vertices, uvs, colors, faces, grid_cols, grid_distance)
    vertices, (uvs, colors), faces = _compact(vertices, [uvs, colors], faces)

    mesh = DepthMesh(vertices.float().cpu(), faces.long().cpu(), uvs.float().cpu(), colors.float().cpu(), rgb)
    if simplify_to_faces:
        mesh = simplify(mesh, simplify_to_faces, Pinhole.from_fov(width, height, fov_degrees))
    return mesh


def _close_poles(vertices: torch.Tensor, uvs: torch.Tensor, colors: torch.Tensor, faces: torch.Tensor, cols: int,
                 grid_distance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fan the first and last vertex rows of a panorama sphere in to a vertex at each pole.

    Pixel centres stop half a pixel short of the poles, which would leave a hole straight up and straight down.
    Each grid cell gets its own copy of the pole vertex (same position) so its triangle takes its texture from its
    own column instead of smearing one colour around the cap.
    """
    rows = grid_distance.shape[0]
    cells = torch.arange(cols - 1, device=faces.device)
    added_vertices, added_uvs, added_colors, added_faces = [], [], [], []
    first_new = vertices.shape[0]
    for cap, (row, up, v) in enumerate(((0, 1.0, 0.0), (rows - 1, -1.0, 1.0))):
        radius = float(grid_distance[row, :-1].mean())
        ring = row * cols + cells
        pole = first_new + cap * cells.shape[0] + cells
        added_vertices.append(vertices.new_tensor([0.0, up * radius, 0.0]).expand(cells.shape[0], 3))
        added_uvs.append(torch.stack([0.5 * (uvs[ring, 0] + uvs[ring + 1, 0]), torch.full_like(uvs[ring, 0], v)], 1))
        added_colors.append(0.5 * (colors[ring] + colors[ring + 1]))
        # Counter-clockwise seen from the centre, like the grid's triangles.
        corners = (pole, ring, ring + 1) if row == 0 else (ring, pole, ring + 1)
        added_faces.append(torch.stack(corners, 1))
    return (torch.cat([vertices, *added_vertices]), torch.cat([uvs, *added_uvs]), torch.cat([colors, *added_colors]),
            torch.cat([faces, *added_faces]))


def _rebuild_on_background(cut_faces: torch.Tensor, corner_log: torch.Tensor, threshold: float,
                           vertex_count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the near corners of cut triangles back onto the background surface.

    Each near corner is replaced by a new vertex on the same pixel ray at the farthest neighbouring distance; new
    vertices are shared between triangles (one per grid vertex) so the rebuilt background surface has no cracks, and
    far corners keep their original vertex so it joins the real background.
    Returns the rebuilt faces and the grid indices that need a background copy (in the order of the new vertices).
    """
    near_corner = corner_log < corner_log.amax(1, keepdim=True) - threshold
    needs_copy = torch.zeros(vertex_count, dtype=torch.bool, device=cut_faces.device)
    needs_copy[cut_faces[near_corner]] = True
    extra = needs_copy.nonzero().squeeze(1)
    copy_index = torch.full((vertex_count,), -1, dtype=torch.long, device=cut_faces.device)
    copy_index[extra] = vertex_count + torch.arange(extra.shape[0], device=cut_faces.device)
    rebuilt = torch.where(near_corner, copy_index[cut_faces], cut_faces)
    return rebuilt, extra


def simplify(mesh: DepthMesh, face_count: int, camera: Pinhole) -> DepthMesh:
    """Quadric edge-collapse simplification (trimesh + fast-simplification) of a perspective depth mesh.

    Simplification moves vertices, so UVs and colours are recomputed by projecting each vertex back into the image
    (a depth mesh is a height field seen from the camera, so that projection is its texture mapping).
    """
    if face_count >= mesh.face_count:
        return mesh
    if face_count < 4:
        raise ValueError(f"simplify_to_faces must be at least 4 triangles (or 0 for no simplification), got {face_count}.")
    try:
        import fast_simplification  # noqa: F401  (trimesh imports it lazily; fail here with a clear message)
    except ImportError as error:
        raise ValueError("Quadric simplification needs the 'fast-simplification' package (pip install "
                         "fast-simplification); set simplify_to_faces to 0 and use the mesh resolution instead.") from error
    import trimesh

    source = trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), process=False)
    simple = source.simplify_quadric_decimation(face_count=int(face_count))
    vertices = torch.from_numpy(np.asarray(simple.vertices, dtype=np.float32))
    faces = torch.from_numpy(np.asarray(simple.faces, dtype=np.int64))
    pixels = camera.project(vertices)
    uvs = torch.stack([pixels[:, 0] / camera.width, pixels[:, 1] / camera.height], dim=-1).clamp(0.0, 1.0)
    x = (uvs[:, 0] * camera.width).long().clamp(0, camera.width - 1)
    y = (uvs[:, 1] * camera.height).long().clamp(0, camera.height - 1)
    colors = mesh.texture[y, x]
    return DepthMesh(vertices, faces, uvs.float(), colors.float(), mesh.texture)


# ---------------------------------------------------------------------------------------------------------------
# Writing


TEXTURE_PNG_COMPRESS_LEVEL = 1
"""zlib level for texture PNGs: level 1 encodes a 1 MP photo ~4x faster than PIL's default 6 for ~12 % more bytes
(photos barely compress losslessly), which is most of the difference between a 1 s and a 2 s GLB export."""


def _texture_image(mesh: DepthMesh):
    from PIL import Image

    class FastPngImage(Image.Image):
        """trimesh encodes textures with a bare `image.save(file, format=...)`; this picks the PNG zlib level."""

        def save(self, fp, format=None, **params):
            if (format or "").lower() == "png":
                params.setdefault("compress_level", TEXTURE_PNG_COMPRESS_LEVEL)
            return super().save(fp, format, **params)

    image = Image.fromarray(image_to_uint8(mesh.texture))
    image.__class__ = FastPngImage
    image.format = "PNG"
    return image


def _trimesh_uvs(mesh: DepthMesh) -> np.ndarray:
    """trimesh (like OBJ) puts the UV origin at the bottom-left and flips v again when it writes glTF."""
    uvs = mesh.uvs.numpy().astype(np.float64).copy()
    uvs[:, 1] = 1.0 - uvs[:, 1]
    return uvs


def _textured_trimesh(mesh: DepthMesh, material_name: str, for_obj: bool = False):
    import trimesh
    from trimesh.visual.material import PBRMaterial, SimpleMaterial

    if for_obj:
        # Viewers multiply map_Kd by Kd, so Kd must be white (trimesh's default grey would darken the photo); no
        # specular highlight on a photo.
        material = SimpleMaterial(name=material_name, image=_texture_image(mesh), diffuse=(255, 255, 255, 255),
                                  ambient=(255, 255, 255, 255), specular=(0, 0, 0, 255))
    else:
        material = PBRMaterial(name=material_name, baseColorTexture=_texture_image(mesh), metallicFactor=0.0,
                               roughnessFactor=1.0, doubleSided=True)
    visual = trimesh.visual.TextureVisuals(uv=_trimesh_uvs(mesh), material=material)
    return trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), visual=visual, process=False)


def mesh_file_contents(mesh: DepthMesh, file_name: str, format: str) -> dict[str, bytes]:
    """{file name: bytes} of every file the format needs (OBJ: .obj, .mtl and .png named after `file_name`)."""
    import trimesh
    from trimesh.exchange.gltf import export_glb
    from trimesh.exchange.obj import export_obj
    from trimesh.exchange.ply import export_ply

    format = format.lower()
    stem = Path(file_name).stem
    if format == "glb":
        return {file_name: export_glb(trimesh.Scene(_textured_trimesh(mesh, stem)))}
    if format == "obj":
        text, extra_files = export_obj(_textured_trimesh(mesh, stem, for_obj=True), return_texture=True, mtl_name=f"{stem}.mtl",
                                       header=None)
        return {file_name: text.encode("utf-8"), **extra_files}
    if format == "ply":
        colors = np.concatenate([image_to_uint8(mesh.vertex_colors),
                                 np.full((mesh.vertex_count, 1), 255, np.uint8)], axis=1)
        coloured = trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), vertex_colors=colors, process=False)
        return {file_name: export_ply(coloured, encoding="binary")}
    raise ValueError(f"Unknown mesh format {format!r}: use one of {', '.join(FORMATS)}.")


def write_files_atomically(folder: str | os.PathLike, files: dict[str, bytes]) -> list[str]:
    """Write every file under a temporary name in `folder`, then rename them all into place.

    On any failure, temporary files and files already renamed by this call are removed, so a failed export never
    leaves a half-written or partial set of files. Returns the final paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"Cannot write the mesh: the folder {folder} does not exist or is not a folder. "
                         "Choose another filename_prefix or output folder.")
    try:
        placed = write_files_atomic(folder, files)
    except OSError as error:
        raise ValueError(f"Cannot write the mesh to {folder}: {error.strerror or error}. Check that the folder is "
                         "writable and has free space, or choose another output folder.") from error
    return [str(path) for path in placed]


def save_mesh(mesh: DepthMesh, path: str | os.PathLike, format: str | None = None) -> list[str]:
    """Write `mesh` to `path` as glb, obj (+ .mtl + .png beside it) or ply (vertex colours); atomic.

    format defaults to the path's extension. Returns every written path, the mesh file first.
    """
    path = Path(path)
    format = (format or path.suffix.lstrip(".")).lower()
    if format not in FORMATS:
        raise ValueError(f"Unknown mesh format {format!r}: use one of {', '.join(FORMATS)}.")
    if mesh.face_count == 0:
        raise ValueError("The mesh has no triangles; nothing to write.")
    return write_files_atomically(path.parent, mesh_file_contents(mesh, path.name, format))
