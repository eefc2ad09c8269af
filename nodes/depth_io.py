"""SaveDepth and LoadDepth: depth files that keep their precision (16-bit PNG, float EXR, .npy)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import folder_paths
from comfy.cli_args import args
from comfy_api.latest import io, ui

from ..depth_core.depth import DepthKind, depth_to_image
from ..depth_core.files import is_inside_name
from ..depth_core.depth_io import (EXTENSIONS, READABLE_EXTENSIONS, encode_depth_files, load_depth,
                                   opencv_writes_exr, write_depth_files)
from ._common import CATEGORY, depth_input, depth_outputs, depth_picture, output_paths, read_depth

NORMALIZE_OPTIONS = {"per image": "per_image", "whole batch": "batch", "keep 0..1 values": "none"}
KIND_OPTIONS = {"from file": None, "relative inverse depth": DepthKind.RELATIVE_INVERSE,
                "metric (metres)": DepthKind.METRIC}


def _exr_note() -> str:
    if opencv_writes_exr():
        return "EXR is written by OpenCV."
    return ("This OpenCV build cannot write EXR, so the pack writes it itself: uncompressed single-channel float32 "
            "(channel Y), readable by Blender, Nuke and OpenCV with OpenEXR.")


class SaveDepth(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DepthToolkit.SaveDepth",
            display_name="Save Depth",
            category=f"{CATEGORY}/io",
            description=(
                "Saves depth maps to the output folder with ComfyUI's naming (prefix_00001_.png ...). png16: "
                "single-channel 16-bit PNG, near = bright, as ControlNet and the old depthmap extension use; the "
                "value range and whether it was metric are recorded in the PNG so Load Depth restores them. exr / "
                "npy: raw float32 values (metres stay metres), with a small .json next to each file. Each file is "
                "written to a temporary name and renamed when complete. " + _exr_note()
            ),
            inputs=[
                depth_input(),
                io.String.Input("filename_prefix", default="depth/ComfyUI",
                                tooltip="Prefix of the file names; may contain a subfolder and %date:...% style "
                                        "values like core Save Image."),
                io.Combo.Input("format", options=list(EXTENSIONS), default="png16",
                               tooltip="png16: 16-bit PNG picture (normalized, near = bright). exr: 32-bit float "
                                       "EXR of the raw values. npy: numpy float32 array of the raw values."),
                io.Combo.Input("normalize", options=list(NORMALIZE_OPTIONS), default="per image",
                               tooltip="png16 only. per image: every file spans 0..65535. whole batch: one range "
                                       "for all frames (steady video). keep 0..1 values: relative depth already in "
                                       "0..1 is written as it is (round-trips a loaded PNG bit for bit)."),
                io.Boolean.Input("invert", default=False,
                                 tooltip="png16 only: black = near instead of white = near (recorded in the file, "
                                         "so Load Depth undoes it)."),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, depth, filename_prefix: str, format: str, normalize: str, invert: bool) -> io.NodeOutput:
        value = read_depth(depth).to("cpu")
        if value.batch_size == 0:
            raise ValueError("The depth batch is empty: connect a node that produces at least one depth map.")
        if normalize not in NORMALIZE_OPTIONS:
            raise ValueError(f"normalize must be one of {list(NORMALIZE_OPTIONS)}, got {normalize!r}.")
        texts = {}
        if format == "png16" and not args.disable_metadata and cls.hidden is not None:
            if cls.hidden.prompt is not None:
                texts["prompt"] = json.dumps(cls.hidden.prompt)
            for key, content in (cls.hidden.extra_pnginfo or {}).items():
                texts[key] = json.dumps(content)
        files = encode_depth_files(value, format, NORMALIZE_OPTIONS[normalize], invert, texts)
        height, width = value.size
        folder, filename, counter, subfolder = output_paths(filename_prefix, width, height)
        names = [f"{filename.replace('%batch_num%', str(i))}_{counter + i:05}_{EXTENSIONS[format]}"
                 for i in range(len(files))]
        write_depth_files([Path(folder) / name for name in names], files)
        if format == "png16":
            saved = [ui.SavedResult(name, subfolder, io.FolderType.output) for name in names]
            return io.NodeOutput(ui=ui.SavedImages(saved))
        # Browsers cannot show EXR or .npy: preview the depth picture instead.
        return io.NodeOutput(ui=ui.PreviewImage(depth_to_image(value), cls=cls))


def _depth_files() -> list[str]:
    folder = folder_paths.get_input_directory()
    names = [name for name in os.listdir(folder) if os.path.isfile(os.path.join(folder, name))]
    return sorted(name for name in names if name.lower().endswith(READABLE_EXTENSIONS))


def outside_message(file: str) -> str | None:
    """Why a file name is refused, or None: names must stay inside their folder (input, or output/temp when
    annotated as ComfyUI does). Symlinks the user placed inside the folder are followed as usual."""
    name, _ = folder_paths.annotated_filepath(file)
    if is_inside_name(name):
        return None
    return (f"{file!r} points outside ComfyUI's input folder; Load Depth only reads files inside it. Copy the depth "
            "file into the input folder (or link a folder into it) and choose it from the list.")


def depth_file_path(file: str) -> str:
    message = outside_message(file)
    if message:
        raise ValueError(message)
    return folder_paths.get_annotated_filepath(file)


class LoadDepth(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DepthToolkit.LoadDepth",
            display_name="Load Depth",
            category=f"{CATEGORY}/io",
            description=(
                "Loads a depth map from the input folder: 8/16-bit PNG (near = bright), float EXR or .npy ([H,W] or "
                "a [B,H,W] batch), without losing precision. Files saved by Save Depth come back with their meaning "
                "(metric or relative) and, for PNG, their value range. Upload PNGs with the button; copy EXR and "
                ".npy files into ComfyUI's input folder."
            ),
            inputs=[
                io.Combo.Input("file", options=_depth_files(), upload=io.UploadType.image,
                               tooltip="A depth file in ComfyUI's input folder (.png, .exr, .npy)."),
                io.Combo.Input("kind", options=list(KIND_OPTIONS), default="from file",
                               tooltip="from file: what Save Depth recorded; for other files PNG and .npy are read "
                                       "as relative inverse depth (larger/brighter = nearer) and EXR as metric "
                                       "distance (a renderer's Z pass). Choose a kind to override."),
            ],
            outputs=depth_outputs(),
        )

    @classmethod
    def execute(cls, file: str, kind: str) -> io.NodeOutput:
        if kind not in KIND_OPTIONS:
            raise ValueError(f"kind must be one of {list(KIND_OPTIONS)}, got {kind!r}.")
        path = depth_file_path(file)
        value = load_depth(path, KIND_OPTIONS[kind])
        return io.NodeOutput(value, depth_picture(value))

    @classmethod
    def fingerprint_inputs(cls, file: str, kind: str):
        if outside_message(file):
            return file
        path = folder_paths.get_annotated_filepath(file)
        sidecar = f"{path}.json"
        stamps = [os.path.getmtime(p) for p in (path, sidecar) if os.path.exists(p)]
        return f"{stamps}-{kind}"

    @classmethod
    def validate_inputs(cls, file: str, kind: str):
        if outside_message(file):
            return outside_message(file)
        if not folder_paths.exists_annotated_filepath(file):
            return f"Depth file not found in the input folder: {file}"
        return True


NODES = [SaveDepth, LoadDepth]
