"""Depth files: 16-bit PNG (near = bright, what ControlNet and the old extension use), float EXR and .npy.

Every file is encoded completely in memory first and then written under a temporary name in the target folder
and renamed into place, so a failure never leaves a half-written file.

What the pack records so LoadDepth can restore the depth's meaning:
- PNG: an iTXt/tEXt chunk "depthtoolkit" holding JSON {"kind", "encoding": "nearness16", "nearness_low",
  "nearness_high", "inverted", "source", "version"}; nearness = relative inverse depth, or 1/metres for metric depth,
  so a metric map comes back in metres (to 1/65535 of its nearness range).
- EXR and NPY: raw float32 values, bit for bit; a sidecar "<file>.json" holds {"kind", "encoding": "raw", ...}.

EXR: OpenCV is used when its build can write EXR (it needs OPENCV_IO_ENABLE_OPENEXR=1, set here before cv2 is
imported). The pip opencv-python(-headless) 5.x wheels are built without OpenEXR, so otherwise the pack writes
the file itself: a standard single-part scanline EXR, one 32-bit FLOAT channel "Y", uncompressed, which Blender,
Nuke, and OpenEXR-enabled OpenCV read. The reader handles uncompressed, ZIPS and ZIP scanline EXR with HALF, FLOAT
or UINT channels, and falls back to OpenCV for anything else when OpenCV can read EXR.
"""
from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")

import cv2  # noqa: E402  (the EXR switch above must be set before OpenCV loads)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .depth import Depth, DepthKind, nearness  # noqa: E402
from .files import write_bytes_atomic  # noqa: E402

FORMATS = ("png16", "exr", "npy")
EXTENSIONS = {"png16": ".png", "exr": ".exr", "npy": ".npy"}
READABLE_EXTENSIONS = (".png", ".exr", ".npy")
NORMALIZATIONS = ("per_image", "batch", "none")
METADATA_KEY = "depthtoolkit"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXR_MAGIC = b"\x76\x2f\x31\x01"


# ---------------------------------------------------------------------------------------------------- writing


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to `path` through a temporary file in the same folder, renamed into place when complete."""
    return write_bytes_atomic(path, data)


def _metadata(depth: Depth, index: int, **extra) -> dict:
    fov = depth.fov_for(index)
    camera = {} if fov is None else {"fov_degrees": fov}
    return {"kind": depth.kind.value, "source": depth.source, "version": 1, **camera, **extra}


def _png_text_chunk(key: str, text: str) -> bytes:
    try:
        kind, body = b"tEXt", key.encode("latin-1") + b"\0" + text.encode("latin-1")
    except UnicodeEncodeError:
        kind, body = b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8")
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _add_png_text(png: bytes, texts: dict[str, str]) -> bytes:
    """Insert text chunks right after IHDR (8-byte signature + 25-byte IHDR chunk)."""
    chunks = b"".join(_png_text_chunk(key, value) for key, value in texts.items())
    return png[:33] + chunks + png[33:]


def _nearness_range(depth: Depth, normalize: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(nearness [B,H,W] float64, low [B], high [B]) for the PNG encoding."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}.")
    values = nearness(depth).double()
    if normalize == "none":
        if depth.is_metric:
            raise ValueError("'keep 0..1 values' only applies to relative depth; metric depth must be normalized "
                             "(choose 'per image' or 'whole batch'), or saved as EXR/NPY to keep metres.")
        ones = torch.ones(values.shape[0], dtype=values.dtype)
        return values, ones * 0, ones
    if normalize == "per_image":
        return values, values.flatten(1).amin(1), values.flatten(1).amax(1)
    low, high = values.min().expand(values.shape[0]), values.max().expand(values.shape[0])
    return values, low, high


def png16_codes(depth: Depth, normalize: str = "per_image", invert: bool = False) -> tuple[np.ndarray, list[dict]]:
    """uint16 [B,H,W] codes (near = 65535 unless inverted) and the metadata that restores the values."""
    if depth.batch_size == 0:
        raise ValueError("The depth batch is empty: connect a node that produces at least one depth map.")
    values, low, high = _nearness_range(depth, normalize)
    span = (high - low).view(-1, 1, 1)
    unit = torch.where(span > 0, (values - low.view(-1, 1, 1)) / torch.where(span > 0, span, torch.ones_like(span)),
                       torch.zeros_like(values)).clamp(0.0, 1.0)
    codes = torch.round(unit * 65535.0).to(torch.int32)
    if invert:
        codes = 65535 - codes
    metadata = [_metadata(depth, i, encoding="nearness16", nearness_low=float(low[i]),
                          nearness_high=float(high[i]), inverted=bool(invert)) for i in range(depth.batch_size)]
    return codes.numpy().astype(np.uint16), metadata


def encode_png16(codes: np.ndarray, metadata: dict, extra_text: dict[str, str] | None = None) -> bytes:
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(codes))
    if not ok:
        raise ValueError("OpenCV could not encode the 16-bit PNG.")
    return _add_png_text(encoded.tobytes(), {METADATA_KEY: json.dumps(metadata), **(extra_text or {})})


def _exr_attribute(name: str, kind: str, payload: bytes) -> bytes:
    return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(payload)) + payload


def encode_exr_minimal(values: np.ndarray) -> bytes:
    """One [H,W] float32 map as an uncompressed single-part scanline EXR with one FLOAT channel "Y"."""
    height, width = values.shape
    channels = b"Y\0" + struct.pack("<iB3xii", 2, 0, 1, 1) + b"\0"
    window = struct.pack("<iiii", 0, 0, width - 1, height - 1)
    header = (_EXR_MAGIC + struct.pack("<I", 2)
              + _exr_attribute("channels", "chlist", channels)
              + _exr_attribute("compression", "compression", b"\0")
              + _exr_attribute("dataWindow", "box2i", window)
              + _exr_attribute("displayWindow", "box2i", window)
              + _exr_attribute("lineOrder", "lineOrder", b"\0")
              + _exr_attribute("pixelAspectRatio", "float", struct.pack("<f", 1.0))
              + _exr_attribute("screenWindowCenter", "v2f", struct.pack("<ff", 0.0, 0.0))
              + _exr_attribute("screenWindowWidth", "float", struct.pack("<f", 1.0))
              + b"\0")
    line_bytes = 8 + 4 * width
    first = len(header) + 8 * height
    offsets = np.arange(height, dtype="<u8") * line_bytes + first
    lines = np.zeros((height, line_bytes), dtype=np.uint8)
    lines[:, 0:4] = np.arange(height, dtype="<i4").view(np.uint8).reshape(height, 4)
    lines[:, 4:8] = np.full(height, 4 * width, dtype="<i4").view(np.uint8).reshape(height, 4)
    lines[:, 8:] = np.ascontiguousarray(values, dtype="<f4").view(np.uint8).reshape(height, 4 * width)
    return header + offsets.tobytes() + lines.tobytes()


def opencv_writes_exr() -> bool:
    try:
        return bool(cv2.haveImageWriter(".exr"))
    except cv2.error:
        return False


def encode_exr(values: np.ndarray) -> tuple[bytes, str]:
    """(file bytes, writer name): OpenCV's EXR writer when this build has one, else the pack's own."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if opencv_writes_exr():
        ok, encoded = cv2.imencode(".exr", values, [cv2.IMWRITE_EXR_TYPE, cv2.IMWRITE_EXR_TYPE_FLOAT])
        if ok:
            return encoded.tobytes(), "opencv"
    return encode_exr_minimal(values), "depthtoolkit-minimal"


def encode_npy(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(values, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def encode_depth_files(depth: Depth, file_format: str, normalize: str = "per_image", invert: bool = False,
                       extra_text: dict[str, str] | None = None) -> list[tuple[bytes, bytes | None]]:
    """One (file bytes, sidecar JSON bytes or None) per depth map; nothing is written yet."""
    if file_format not in FORMATS:
        raise ValueError(f"Unknown depth file format {file_format!r}; choose one of {', '.join(FORMATS)}.")
    if depth.batch_size == 0:
        raise ValueError("The depth batch is empty: connect a node that produces at least one depth map.")
    if file_format == "png16":
        codes, metadata = png16_codes(depth, normalize, invert)
        return [(encode_png16(codes[i], metadata[i], extra_text), None) for i in range(depth.batch_size)]
    values = depth.values.detach().float().cpu().numpy()
    files = []
    for index, image in enumerate(values):
        if file_format == "exr":
            data, writer = encode_exr(image)
        else:
            data, writer = encode_npy(image), "numpy"
        sidecar = json.dumps(_metadata(depth, index, encoding="raw", writer=writer), indent=1).encode()
        files.append((data, sidecar))
    return files


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(f"{path}.json")


def write_depth_files(paths: list[Path], files: list[tuple[bytes, bytes | None]]) -> list[Path]:
    for path, (data, sidecar) in zip(paths, files):
        if sidecar is not None:
            write_atomic(sidecar_path(path), sidecar)
        write_atomic(path, data)
    return paths


def save_depth_png16(path: str | os.PathLike, depth: Depth, index: int = 0, normalize: str = "per_image",
                     invert: bool = False) -> Path:
    """Write depth map `index` as a single-channel 16-bit PNG, near = bright (black = near if inverted).

    normalize: "per_image" (this map's own range), "batch" (the batch's range, steady across video frames) or
    "none" (relative values already in 0..1, written as they are).
    """
    codes, metadata = png16_codes(depth, normalize, invert)
    if not 0 <= index < depth.batch_size:
        raise ValueError(f"Depth index {index} is out of range for a batch of {depth.batch_size}.")
    return write_atomic(path, encode_png16(codes[index], metadata[index]))


def save_depth(path: str | os.PathLike, depth: Depth, index: int = 0, normalize: str = "per_image",
               invert: bool = False) -> Path:
    """Write one depth map; the format follows the extension (.png = 16-bit, .exr, .npy float32 + sidecar)."""
    suffix = Path(path).suffix.lower()
    formats = {extension: name for name, extension in EXTENSIONS.items()}
    if suffix not in formats:
        raise ValueError(f"Cannot save depth as {suffix or 'a file without extension'}; use .png, .exr or .npy.")
    if depth.batch_size == 0:
        raise ValueError("The depth batch is empty: connect a node that produces at least one depth map.")
    if not 0 <= index < depth.batch_size:
        raise ValueError(f"Depth index {index} is out of range for a batch of {depth.batch_size}.")
    files = encode_depth_files(depth, formats[suffix], normalize, invert)
    return write_depth_files([Path(path)], [files[index]])[0]


# ---------------------------------------------------------------------------------------------------- reading


def png_texts(data: bytes) -> dict[str, str]:
    """The tEXt/iTXt (uncompressed) entries of a PNG file."""
    texts: dict[str, str] = {}
    position = len(_PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if kind == b"tEXt" and b"\0" in body:
            key, value = body.split(b"\0", 1)
            texts[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"iTXt" and b"\0" in body:
            key, rest = body.split(b"\0", 1)
            if len(rest) >= 2 and rest[0] == 0:
                _language, _translated, value = rest[2:].split(b"\0", 2)
                texts[key.decode("latin-1")] = value.decode("utf-8")
        elif kind == b"IEND":
            break
        position += 12 + length
    return texts


def _read_png(data: bytes, name: str) -> tuple[np.ndarray, dict | None]:
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{name} is not a readable PNG. Choose an 8- or 16-bit PNG depth map, an EXR or a .npy file.")
    if image.dtype == np.uint16:
        scale = 65535.0
    elif image.dtype == np.uint8:
        scale = 255.0
    else:
        raise ValueError(f"{name} has {image.dtype} pixels; depth PNGs must be 8- or 16-bit.")
    if image.ndim == 3:
        # A depth picture saved as colour (BGR or BGRA): the grey level is the mean of the colour channels.
        image = image[..., :3].astype(np.float64).mean(-1)
    unit = image.astype(np.float64) / scale
    metadata = None
    raw = png_texts(data).get(METADATA_KEY)
    if raw is not None:
        try:
            metadata = json.loads(raw)
        except json.JSONDecodeError:
            metadata = None
    return unit, metadata


def _restore_png(unit: np.ndarray, metadata: dict | None) -> tuple[np.ndarray, DepthKind | None]:
    if not metadata or metadata.get("encoding") != "nearness16":
        return unit.astype(np.float32), None
    if metadata.get("inverted"):
        unit = 1.0 - unit
    low, high = float(metadata["nearness_low"]), float(metadata["nearness_high"])
    values = low + unit * (high - low)
    kind = DepthKind(metadata.get("kind", DepthKind.RELATIVE_INVERSE.value))
    if kind is DepthKind.METRIC:
        values = 1.0 / np.maximum(values, 1e-12)
    return values.astype(np.float32), kind


_EXR_TYPES = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}
_EXR_LINES_PER_CHUNK = {0: 1, 2: 1, 3: 16}


def _exr_unzip(data: bytes, expected: int) -> bytes:
    raw = np.frombuffer(zlib.decompress(data), dtype=np.uint8).astype(np.int64)
    if raw.size != expected:
        raise ValueError("Corrupt EXR: a compressed block has the wrong size.")
    raw[1:] -= 128
    predicted = (np.cumsum(raw) & 0xFF).astype(np.uint8)
    half = (predicted.size + 1) // 2
    out = np.empty_like(predicted)
    out[0::2], out[1::2] = predicted[:half], predicted[half:]
    return out.tobytes()


def _pick_exr_channel(names: list[str]) -> str:
    for wanted in ("Y", "Z", "R", "depth", "depth.Z", "distance"):
        if wanted in names:
            return wanted
    return names[0]


def decode_exr(data: bytes, name: str = "EXR file") -> np.ndarray:
    """[H,W] float32 of one channel (Y, Z or R first) of a single-part scanline EXR (NO, ZIPS or ZIP compression)."""
    if data[:4] != _EXR_MAGIC:
        raise ValueError(f"{name} is not an OpenEXR file.")
    if struct.unpack("<I", data[4:8])[0] & 0x1A00:
        raise ValueError(f"{name} is a tiled, deep or multi-part EXR; save depth as a single-part scanline EXR.")
    position, header = 8, {}
    while data[position] != 0:
        end = data.index(b"\0", position)
        attribute = data[position:end].decode()
        type_end = data.index(b"\0", end + 1)
        size = struct.unpack("<i", data[type_end + 1:type_end + 5])[0]
        header[attribute] = data[type_end + 5:type_end + 5 + size]
        position = type_end + 5 + size
    position += 1
    channels, cursor, raw_channels = [], 0, header["channels"]
    while raw_channels[cursor] != 0:
        end = raw_channels.index(b"\0", cursor)
        pixel_type, _, x_sampling, y_sampling = struct.unpack("<iB3xii", raw_channels[end + 1:end + 17])
        if (x_sampling, y_sampling) != (1, 1):
            raise ValueError(f"{name} has subsampled channels, which depth files never use.")
        channels.append((raw_channels[cursor:end].decode(), _EXR_TYPES[pixel_type]))
        cursor = end + 17
    compression = header["compression"][0]
    if compression not in _EXR_LINES_PER_CHUNK:
        raise NotImplementedError(f"EXR compression {compression}")
    x_min, y_min, x_max, y_max = struct.unpack("<iiii", header["dataWindow"])
    width, height = x_max - x_min + 1, y_max - y_min + 1
    lines = _EXR_LINES_PER_CHUNK[compression]
    chunk_count = (height + lines - 1) // lines
    offsets = np.frombuffer(data, dtype="<u8", count=chunk_count, offset=position)
    wanted = _pick_exr_channel([channel for channel, _ in channels])
    out = np.empty((height, width), dtype=np.float32)
    for chunk in range(chunk_count):
        start = int(offsets[chunk])
        first_line, size = struct.unpack("<ii", data[start:start + 8])
        row = first_line - y_min
        count = min(lines, height - row)
        block = data[start + 8:start + 8 + size]
        expected = count * width * sum(dtype.itemsize for _, dtype in channels)
        if compression != 0 and size < expected:
            block = _exr_unzip(block, expected)
        cursor = 0
        for line in range(count):
            for channel, dtype in channels:
                values = np.frombuffer(block, dtype=dtype, count=width, offset=cursor)
                cursor += width * dtype.itemsize
                if channel == wanted:
                    out[row + line] = values.astype(np.float32)
    return out


def _read_exr(data: bytes, path: Path) -> np.ndarray:
    try:
        return decode_exr(data, path.name)
    except NotImplementedError as unsupported:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError(
                f"{path.name} uses {unsupported}, which the pack's EXR reader does not handle and this OpenCV build "
                "cannot read. Re-save it uncompressed or ZIP-compressed, or as .npy."
            ) from None
        return (image if image.ndim == 2 else image[..., 0]).astype(np.float32)
    except (KeyError, IndexError, struct.error, zlib.error, ValueError) as error:
        raise ValueError(f"{path.name} is not a readable EXR ({error}). Re-save it, or use a 16-bit PNG or .npy.") \
            from None


def _single_channel(array: np.ndarray, path: Path) -> np.ndarray:
    """A last axis of 3 or 4 is colour (RGB, RGBA), not 3 or 4 pixels of width: a gray picture saved as colour
    (all colour channels equal) gives its one channel; a colourful one is refused, since colours (a turbo or
    inferno map) cannot be read back as depth."""
    colour = array[..., :3]
    floats = np.issubdtype(array.dtype, np.floating)
    if all(np.array_equal(colour[..., 0], colour[..., c], equal_nan=floats) for c in (1, 2)):
        return colour[..., 0]
    channels = "red, green, blue" + (", alpha" if array.shape[-1] == 4 else "")
    raise ValueError(f"{path.name} holds a colour image of shape {array.shape} (last axis: {channels}), not depth: "
                     "a depth .npy holds one value per pixel, [H,W] or [B,H,W]. Save the depth itself, or one "
                     "channel of a gray depth picture (numpy.save(name, array[..., 0])).")


def _read_npy(data: bytes, path: Path) -> np.ndarray:
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ValueError(f"{path.name} is not a readable .npy array ({error}). Save depth with numpy.save.") from None
    if array.ndim in (3, 4) and array.shape[-1] in (3, 4):
        array = _single_channel(array, path)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or array.size == 0:
        raise ValueError(f"{path.name} holds an array of shape {array.shape}; a depth .npy must be [H,W] or [B,H,W].")
    if array.dtype == np.uint16:
        return (array / 65535.0).astype(np.float32)
    if array.dtype == np.uint8:
        return (array / 255.0).astype(np.float32)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{path.name} holds {array.dtype} values; a depth .npy must hold floats (or uint8/uint16).")
    return array.astype(np.float32)


def _read_sidecar(path: Path) -> dict | None:
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return None
    try:
        return json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def default_kind(path: str | os.PathLike) -> DepthKind:
    """The meaning assumed for a file without the pack's metadata: EXR is usually a renderer's Z pass in scene units
    (metric); PNG and NPY pictures are relative, near = bright."""
    return DepthKind.METRIC if Path(path).suffix.lower() == ".exr" else DepthKind.RELATIVE_INVERSE


def load_depth(path: str | os.PathLike, kind: DepthKind | str | None = None) -> Depth:
    """Read a depth file back to a Depth [B,H,W] float32.

    kind None: the meaning the pack recorded in the file (PNG chunk or sidecar), else `default_kind`. A given kind
    overrides it: for a PNG that only changes the label of the 0..1 values unless the file records a value range.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in READABLE_EXTENSIONS:
        raise ValueError(f"Cannot read depth from {path.name}: choose a .png (8/16-bit), .exr or .npy file.")
    if not path.is_file():
        raise ValueError(f"Depth file not found: {path}. Put it in ComfyUI's input folder or upload it.")
    data = path.read_bytes()
    recorded: DepthKind | None = None
    if suffix == ".png":
        if not data.startswith(_PNG_SIGNATURE):
            raise ValueError(f"{path.name} is not a PNG file. Choose an 8- or 16-bit PNG depth map, EXR or .npy.")
        unit, metadata = _read_png(data, path.name)
        values, recorded = _restore_png(unit, metadata)
    else:
        values = _read_exr(data, path) if suffix == ".exr" else _read_npy(data, path)
        metadata = _read_sidecar(path)
        if metadata and "kind" in metadata:
            recorded = DepthKind(metadata["kind"])
    chosen = DepthKind(kind) if kind is not None else (recorded or default_kind(path))
    if values.ndim == 2:
        values = values[None]
    fov = (metadata or {}).get("fov_degrees")
    camera = (float(fov),) if isinstance(fov, (int, float)) and 0 < fov < 180 else None
    return Depth(torch.from_numpy(np.ascontiguousarray(values)), chosen, f"file:{path.name}", camera)
