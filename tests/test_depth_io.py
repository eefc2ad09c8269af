"""Depth files: bit-exact round trips, recorded meaning, foreign files, bad files, atomic writes."""
from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from depth_core.depth import Depth, DepthKind
from depth_core.depth_io import (decode_exr, encode_exr_minimal, load_depth, png16_codes, png_texts, save_depth,
                                 save_depth_png16, sidecar_path, write_atomic)

FOREIGN_EXR = Path("/root/.pyenv/versions/3.12.1/lib/python3.12/test/imghdrdata/python.exr")


def smooth_depth(batch: int = 2, height: int = 12, width: int = 17, kind=DepthKind.RELATIVE_INVERSE) -> Depth:
    generator = torch.Generator().manual_seed(7)
    values = torch.rand(batch, height, width, generator=generator) * 4 + 1
    return Depth(values, kind, "test")


def png_pixels(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


# ---------------------------------------------------------------------------------------- 16-bit PNG


def test_png16_is_single_channel_uint16_near_bright(tmp_path):
    depth = Depth(torch.linspace(1, 2, 10).expand(3, 10).clone()[None], DepthKind.RELATIVE_INVERSE)
    path = save_depth_png16(tmp_path / "d.png", depth)
    pixels = png_pixels(path)
    assert pixels.dtype == np.uint16 and pixels.shape == (3, 10)
    assert pixels[0, 0] == 0 and pixels[0, -1] == 65535  # larger relative value = nearer = brighter
    inverted = png_pixels(save_depth_png16(tmp_path / "i.png", depth, invert=True))
    assert np.array_equal(inverted, 65535 - pixels)


@pytest.mark.parametrize("kind", [DepthKind.RELATIVE_INVERSE, DepthKind.METRIC])
@pytest.mark.parametrize("invert", [False, True])
def test_png16_round_trip_is_bit_exact(tmp_path, kind, invert):
    depth = smooth_depth(kind=kind)
    first = save_depth_png16(tmp_path / "a.png", depth, index=1, invert=invert)
    loaded = load_depth(first)
    assert loaded.kind is kind and loaded.batch_size == 1
    second = save_depth_png16(tmp_path / "b.png", loaded, invert=invert)
    assert np.array_equal(png_pixels(first), png_pixels(second))


def test_png16_restores_metric_metres(tmp_path):
    depth = smooth_depth(kind=DepthKind.METRIC)
    loaded = load_depth(save_depth_png16(tmp_path / "m.png", depth))
    nearness_step = (1 / depth.values[0].min() - 1 / depth.values[0].max()) / 65535
    error = (1 / loaded.values[0] - 1 / depth.values[0]).abs().max()
    assert loaded.kind is DepthKind.METRIC
    assert float(error) <= float(nearness_step) * 0.51  # within half a 16-bit step of nearness


def test_png16_batch_normalization_shares_one_range():
    depth = Depth(torch.stack([torch.linspace(0, 1, 8).expand(2, 8), torch.linspace(0, 2, 8).expand(2, 8)]),
                  DepthKind.RELATIVE_INVERSE)
    per_image, _ = png16_codes(depth, "per_image")
    batch, metadata = png16_codes(depth, "batch")
    assert per_image[0].max() == per_image[1].max() == 65535
    assert batch[0].max() == 32768 and batch[1].max() == 65535
    assert metadata[0]["nearness_high"] == metadata[1]["nearness_high"] == 2.0


def test_foreign_16bit_png_round_trips_with_keep_values(tmp_path):
    codes = (np.arange(40 * 30, dtype=np.uint32) * 37 % 60000 + 1000).astype(np.uint16).reshape(30, 40)
    foreign = tmp_path / "foreign.png"
    cv2.imwrite(str(foreign), codes)
    loaded = load_depth(foreign)
    assert loaded.kind is DepthKind.RELATIVE_INVERSE
    assert torch.allclose(loaded.values[0].double(), torch.from_numpy(codes / 65535.0), atol=1e-7)
    again = save_depth_png16(tmp_path / "again.png", loaded, normalize="none")
    assert np.array_equal(png_pixels(again), codes)


def test_8bit_gray_and_colour_pngs(tmp_path):
    gray = (np.arange(64, dtype=np.uint8) * 4).reshape(8, 8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    cv2.imwrite(str(tmp_path / "c.png"), np.repeat(gray[..., None], 3, axis=2))
    cv2.imwrite(str(tmp_path / "a.png"), np.concatenate([np.repeat(gray[..., None], 3, 2), np.full((8, 8, 1), 9,
                                                                                              np.uint8)], 2))
    for name in ("g.png", "c.png", "a.png"):
        loaded = load_depth(tmp_path / name)
        assert loaded.values.shape == (1, 8, 8)
        assert torch.equal(loaded.values[0], torch.from_numpy((gray / 255.0).astype(np.float32)))
    again = save_depth_png16(tmp_path / "16.png", load_depth(tmp_path / "g.png"), normalize="none")
    assert np.array_equal(png_pixels(again), gray.astype(np.uint16) * 257)  # 8-bit to 16-bit without loss


def test_png_metadata_chunk_and_extra_text(tmp_path):
    depth = smooth_depth(kind=DepthKind.METRIC)
    path = save_depth_png16(tmp_path / "m.png", depth)
    metadata = json.loads(png_texts(path.read_bytes())["depthtoolkit"])
    assert metadata["kind"] == "metric" and metadata["encoding"] == "nearness16"
    assert metadata["nearness_low"] == pytest.approx(float(1 / depth.values[0].max()))
    from depth_core.depth_io import encode_png16
    codes, meta = png16_codes(depth)
    data = encode_png16(codes[0], meta[0], {"workflow": json.dumps({"name": "café ☕"})})
    texts = png_texts(data)
    assert json.loads(texts["workflow"])["name"] == "café ☕"
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(decoded, codes[0])  # the inserted chunks keep the PNG valid


def test_metric_keep_values_is_refused():
    with pytest.raises(ValueError, match="relative depth"):
        png16_codes(smooth_depth(kind=DepthKind.METRIC), "none")


def test_nan_inf_and_constant_depth_save_cleanly(tmp_path):
    values = torch.full((1, 4, 5), 2.0)
    flat = png_pixels(save_depth_png16(tmp_path / "flat.png", Depth(values, DepthKind.RELATIVE_INVERSE)))
    assert flat.max() == 0
    assert torch.equal(load_depth(tmp_path / "flat.png").values, values)  # constant restored from the metadata
    values[0, 1, 1], values[0, 2, 2] = float("nan"), float("inf")
    values[0, 0, 0] = 5.0
    broken = png_pixels(save_depth_png16(tmp_path / "nan.png", Depth(values, DepthKind.METRIC)))
    assert broken.dtype == np.uint16 and broken[1, 1] == 0 and broken[2, 2] == 0  # non-finite = farthest


# ---------------------------------------------------------------------------------------- float files


@pytest.mark.parametrize("extension", [".exr", ".npy"])
@pytest.mark.parametrize("kind", [DepthKind.RELATIVE_INVERSE, DepthKind.METRIC])
def test_float_round_trip_is_bit_exact(tmp_path, extension, kind):
    depth = smooth_depth(kind=kind)
    values = depth.values.clone()
    values[0, 0, 0] = 1e-30
    values[0, 0, 1] = 123456.789
    depth = depth.with_values(values)
    path = save_depth(tmp_path / f"d{extension}", depth, index=0)
    loaded = load_depth(path)
    assert loaded.kind is kind
    assert torch.equal(loaded.values[0], values[0])
    again = save_depth(tmp_path / f"again{extension}", loaded)
    assert again.read_bytes() == path.read_bytes()
    assert json.loads(sidecar_path(path).read_text())["kind"] == kind.value


def test_exr_writer_layout_and_reader():
    values = np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5
    data = encode_exr_minimal(values)
    assert data[:4] == b"\x76\x2f\x31\x01"
    assert b"channels\0chlist\0" in data and b"compression\0compression\0" in data
    assert np.array_equal(decode_exr(data), values)


def test_exr_zip_compressed_reader():
    """A ZIP-compressed EXR assembled by hand from the spec (interleave, byte deltas, zlib)."""
    height, width = 20, 5
    values = np.round(np.linspace(-3, 7, height * width), 1).astype(np.float32).reshape(height, width)
    plain = encode_exr_minimal(values)
    header_end = plain.index(b"screenWindowWidth\0float\0") + len("screenWindowWidth\0float\0") + 8 + 1
    header = plain[:header_end].replace(b"compression\0compression\0\x01\0\0\0\0",
                                        b"compression\0compression\0\x01\0\0\0\x03")
    chunks = []
    for first in range(0, height, 16):
        raw = np.frombuffer(values[first:first + 16].astype("<f4").tobytes(), np.uint8)
        interleaved = np.concatenate([raw[0::2], raw[1::2]]).astype(np.int64)
        deltas = interleaved.copy()
        deltas[1:] = (interleaved[1:] - interleaved[:-1] + 128) & 0xFF
        packed = zlib.compress(deltas.astype(np.uint8).tobytes())
        assert len(packed) < raw.size  # else the spec stores the block uncompressed
        chunks.append(struct.pack("<ii", first, len(packed)) + packed)
    offsets, position = [], len(header) + 8 * len(chunks)
    for chunk in chunks:
        offsets.append(position)
        position += len(chunk)
    data = header + np.array(offsets, "<u8").tobytes() + b"".join(chunks)
    assert np.array_equal(decode_exr(data), values)


@pytest.mark.skipif(not FOREIGN_EXR.is_file(), reason="CPython's sample EXR is not on this machine")
def test_reads_a_foreign_half_float_exr(tmp_path):
    target = tmp_path / "python.exr"
    target.write_bytes(FOREIGN_EXR.read_bytes())
    loaded = load_depth(target)
    assert loaded.kind is DepthKind.METRIC and loaded.values.shape == (1, 16, 16)
    assert float(loaded.values.min()) >= 0.0 and float(loaded.values.max()) <= 1.0 and loaded.values.std() > 0.1


def test_npy_batches_and_dtypes(tmp_path):
    batch = np.random.default_rng(0).random((3, 5, 6)).astype(np.float32)
    np.save(tmp_path / "b.npy", batch)
    loaded = load_depth(tmp_path / "b.npy")
    assert loaded.batch_size == 3 and loaded.kind is DepthKind.RELATIVE_INVERSE
    assert torch.equal(loaded.values, torch.from_numpy(batch))
    assert load_depth(tmp_path / "b.npy", DepthKind.METRIC).kind is DepthKind.METRIC
    np.save(tmp_path / "u.npy", np.full((2, 2), 65535, np.uint16))
    assert float(load_depth(tmp_path / "u.npy").values.max()) == 1.0


@pytest.mark.parametrize("channels", [3, 4])
def test_npy_with_a_colour_axis_is_one_gray_channel_or_refused(tmp_path, channels):
    gray = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    picture = np.repeat(gray[..., None], channels, axis=-1)
    if channels == 4:
        picture[..., 3] = 1.0  # opaque alpha
    np.save(tmp_path / "gray.npy", picture)
    loaded = load_depth(tmp_path / "gray.npy")
    assert loaded.values.shape == (1, 64, 64)  # one 64x64 map, not 64 maps of 3x64
    assert torch.equal(loaded.values[0], torch.from_numpy(gray))
    np.save(tmp_path / "gray_batch.npy", np.stack([picture, picture]))
    assert load_depth(tmp_path / "gray_batch.npy").values.shape == (2, 64, 64)
    colourful = picture.copy()
    colourful[..., 0] = 1.0 - gray  # a colour map: channels disagree
    np.save(tmp_path / "turbo.npy", colourful)
    with pytest.raises(ValueError, match=r"colour image of shape \(64, 64, %d\).*array\[\.\.\., 0\]" % channels):
        load_depth(tmp_path / "turbo.npy")


# ------------------------------------------------------------------------------------------ bad files


def test_bad_files_give_clear_errors(tmp_path):
    (tmp_path / "text.png").write_text("not a png")
    (tmp_path / "text.exr").write_text("not an exr")
    (tmp_path / "text.npy").write_text("not an array")
    (tmp_path / "depth.jpg").write_bytes(b"\xff\xd8")
    np.save(tmp_path / "strings.npy", np.array([["a", "b"]]))
    np.save(tmp_path / "empty.npy", np.zeros((0, 3), np.float32))
    cv2.imwrite(str(tmp_path / "really_jpeg.png.jpg"), np.zeros((4, 4), np.uint8))
    os.replace(tmp_path / "really_jpeg.png.jpg", tmp_path / "really_jpeg.png")
    for name, message in (("text.png", "not a PNG"), ("text.exr", "not a readable EXR"),
                          ("text.npy", "not a readable .npy"), ("depth.jpg", "choose a .png"),
                          ("strings.npy", "must hold floats"), ("empty.npy", "shape"),
                          ("really_jpeg.png", "not a PNG"), ("missing.png", "not found")):
        with pytest.raises(ValueError, match=message):
            load_depth(tmp_path / name)


def test_save_errors(tmp_path):
    depth = smooth_depth()
    with pytest.raises(ValueError, match="out of range"):
        save_depth_png16(tmp_path / "x.png", depth, index=5)
    with pytest.raises(ValueError, match="use .png"):
        save_depth(tmp_path / "x.tif", depth)
    with pytest.raises(ValueError, match="empty"):
        save_depth_png16(tmp_path / "x.png", Depth(torch.zeros(0, 2, 2), DepthKind.RELATIVE_INVERSE))
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "file.bin"
    write_atomic(target, b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "text is not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]
