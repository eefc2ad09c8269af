"""DepthToolkit.MeshExport: image + depth -> textured mesh file (GLB / OBJ / PLY) + core MESH for SaveGLB/Preview3D."""
from __future__ import annotations

import inspect
import os

import torch
from comfy_api.latest import Types, io


from ..depth_core.camera import choose_fov
from ..depth_core.depth import match_depth_to_images
from ..depth_core.image import to_rgb
from ..depth_core.mesh import (DEFAULT_DISCONTINUITY_THRESHOLD, DEFAULT_RESOLUTION, FORMATS, PROJECTIONS, DepthMesh,
                               depth_to_mesh, save_mesh)
from ._common import (CATEGORY, comfy_progress, compute_device, depth_input, fov_input, output_paths, read_depth,
                      report_fov)

DEFAULT_FILENAME_PREFIX = "3d/depth_mesh"


def _mesh_batch(meshes: list[DepthMesh]) -> Types.MESH:
    """Core's MESH for a batch: vertices [B,N,3] and faces [B,M,3], zero-padded to the largest item.

    Cores that know per-item counts, UVs, colours and textures (newer than v0.8.0) get them too; padding faces are
    degenerate (0,0,0) triangles, which older cores write harmlessly.
    """
    vertex_counts = [m.vertex_count for m in meshes]
    face_counts = [m.face_count for m in meshes]
    most_vertices, most_faces = max(vertex_counts), max(face_counts)

    def pad(tensors: list[torch.Tensor], length: int) -> torch.Tensor:
        out = tensors[0].new_zeros((len(tensors), length, tensors[0].shape[1]))
        for i, tensor in enumerate(tensors):
            out[i, : tensor.shape[0]] = tensor
        return out

    arguments = {
        "vertices": pad([m.vertices for m in meshes], most_vertices),
        "faces": pad([m.faces for m in meshes], most_faces),
    }
    accepted = inspect.signature(Types.MESH.__init__).parameters
    optional = {
        "uvs": lambda: pad([m.uvs for m in meshes], most_vertices),
        "vertex_colors": lambda: pad([m.vertex_colors for m in meshes], most_vertices),
        "texture": lambda: torch.stack([m.texture for m in meshes]),
    }
    arguments.update({name: make() for name, make in optional.items() if name in accepted})
    uneven = len(set(vertex_counts)) > 1 or len(set(face_counts)) > 1
    if uneven and "vertex_counts" in accepted and "face_counts" in accepted:
        arguments["vertex_counts"] = torch.tensor(vertex_counts)
        arguments["face_counts"] = torch.tensor(face_counts)
    return Types.MESH(**arguments)


class MeshExport(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DepthToolkit.MeshExport",
            display_name="Depth to 3D Mesh",
            category=f"{CATEGORY}/3d",
            description=(
                "Turns an image and its depth into a textured 3D mesh file (GLB, OBJ+MTL+PNG or PLY) in the output "
                "folder: +Y up, camera looking down -Z, metres for metric depth, so Blender and ComfyUI's 3D viewer "
                "show it upright. Wire model_file into core 'Preview 3D' and mesh into core 'SaveGLB'."
            ),
            is_output_node=True,
            inputs=[
                io.Image.Input("image", tooltip="The photo: becomes the mesh's texture (and vertex colours for PLY)."),
                depth_input(),
                io.Combo.Input("format", options=list(FORMATS), default="glb",
                               tooltip="glb: one file with embedded texture (best for ComfyUI and Blender). obj: "
                                       ".obj + .mtl + .png texture beside it. ply: vertex colours, no texture."),
                io.Combo.Input("projection", options=list(PROJECTIONS), default="perspective",
                               tooltip="perspective: a normal photo seen through a pinhole camera with the field of "
                                       "view below. equirectangular: a 360x180 degree panorama, mapped onto a sphere "
                                       "around the camera."),
                fov_input(note="Perspective only (ignored for equirectangular). "),
                io.Float.Input("near", default=1.0, min=0.001, max=100000.0, step=0.1,
                               tooltip="Relative depth only: distance (scene units) of the nearest point. Metric "
                                       "depth keeps its metres and ignores near/far."),
                io.Float.Input("far", default=10.0, min=0.002, max=100000.0, step=0.1,
                               tooltip="Relative depth only: distance (scene units) of the farthest point; must be "
                                       "larger than near. far/near sets how deep the scene looks."),
                io.Float.Input("discontinuity_threshold", default=DEFAULT_DISCONTINUITY_THRESHOLD, min=0.0,
                               max=10.0, step=0.01,
                               tooltip="Cut triangles whose corners' distances differ by more than this ratio (on a "
                                       "log scale: 0.15 = about 16 %), so foreground and background do not melt "
                                       "together. 0 keeps every triangle. Raise it if too much is cut."),
                io.Boolean.Input("keep_background", default=False,
                                 tooltip="Instead of leaving holes where triangles were cut, rebuild them on the "
                                         "background surface behind the foreground (looks closed from the side)."),
                io.Int.Input("resolution", default=DEFAULT_RESOLUTION, min=0, max=16384, step=1,
                             tooltip="Mesh vertices along the longer image side (the texture keeps full "
                                     "resolution). 1024 gives about 1.5 million triangles; 0 = one vertex per "
                                     "pixel (huge for big photos)."),
                io.Int.Input("simplify_to_faces", default=0, min=0, max=100000000, step=1000,
                             tooltip="Optional quadric simplification to about this many triangles (perspective "
                                     "only; needs the fast-simplification package). 0 = off."),
                io.String.Input("filename_prefix", default=DEFAULT_FILENAME_PREFIX,
                                tooltip="Where to save inside ComfyUI's output folder; a counter and the extension "
                                        "are added (3d/depth_mesh -> output/3d/depth_mesh_00001_.glb)."),
            ],
            outputs=[
                io.String.Output("model_file",
                                 tooltip="Path of the (first) saved mesh relative to the output folder: plug into "
                                         "core 'Preview 3D' model_file."),
                io.Mesh.Output("mesh",
                               tooltip="The mesh(es) as core MESH (vertices and faces; UVs, colours and texture "
                                       "where your ComfyUI supports them), for core SaveGLB and other 3D nodes."),
            ],
        )

    @classmethod
    def execute(cls, image, depth, format, projection, fov, near, far, discontinuity_threshold, keep_background,
                resolution, simplify_to_faces, filename_prefix) -> io.NodeOutput:
        images = to_rgb(image).float().cpu()
        batch, height, width = images.shape[:3]
        depth = match_depth_to_images(read_depth(depth).to("cpu"), batch, (height, width))
        folder, filename, counter, subfolder = output_paths(filename_prefix, width, height)

        # Build every mesh before writing any file, so bad settings for one item leave no partial batch behind.
        progress = comfy_progress(2 * batch)
        meshes, cameras = [], []
        for index in range(batch):
            fov_degrees, source = choose_fov(fov, depth.fov_for(index))
            cameras.append(source)
            meshes.append(depth_to_mesh(
                images[index], depth.select(index), fov_degrees=fov_degrees,
                projection=projection, near=near, far=far, discontinuity_threshold=discontinuity_threshold,
                keep_background=keep_background, resolution=resolution, simplify_to_faces=simplify_to_faces,
                device=compute_device()))
            progress(index + 1, 2 * batch)
        results = []
        for index, mesh in enumerate(meshes):
            file = f"{filename}_{counter + index:05}_.{format}"
            save_mesh(mesh, os.path.join(folder, file), format)
            results.append({"filename": file, "subfolder": subfolder, "type": "output"})
            progress(batch + index + 1, 2 * batch)

        first = results[0]
        model_file = f"{first['subfolder']}/{first['filename']}" if first["subfolder"] else first["filename"]
        used = report_fov("Mesh Export", cameras) if projection == "perspective" else ""
        return io.NodeOutput(model_file.replace("\\", "/"), _mesh_batch(meshes),
                             ui={"3d": results, **({"text": [used]} if used else {})})


NODES = [MeshExport]
