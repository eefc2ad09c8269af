"""Layered depth image, background inpainting and mesh files of the 3D photo (depth_core.photo3d)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from depth_core.camera import Pinhole
from depth_core.photo3d import build_photo3d
from depth_core.photo3d.inpaint import nearest_source_fill, push_pull_fill, row_source_fill
from depth_core.photo3d.layers import (TAG_BORDER, TAG_INPAINTED, TAG_VISIBLE, build_layered_depth_image,
                                       discontinuity_threshold, foreground_edges)
from depth_core.photo3d.mesh import layered_mesh, read_ply_header, write_mesh

FAR, NEAR = 6.0, 2.0
RED, GREEN = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)


def step_scene(height: int = 24, width: int = 32, split: int = 16) -> tuple[torch.Tensor, torch.Tensor, Pinhole]:
    """Left part: red, far wall; right part (from column `split`): green, near box."""
    distance = torch.full((height, width), FAR)
    distance[:, split:] = NEAR
    image = torch.zeros(3, height, width)
    image[:, :, :split] = torch.tensor(RED)[:, None, None]
    image[:, :, split:] = torch.tensor(GREEN)[:, None, None]
    return image, distance, Pinhole.from_fov(width, height, 55.0)


def test_step_edge_is_found_on_the_near_side_with_the_far_depth_across():
    _, distance, _ = step_scene()
    threshold = discontinuity_threshold(distance)
    edges, far_side = foreground_edges(distance, threshold)
    expected = torch.zeros_like(edges)
    expected[:, 16] = True
    assert torch.equal(edges, expected)
    assert torch.allclose(far_side[:, 16], torch.full((24,), FAR))


def test_hidden_band_has_the_background_depth_and_colour_not_the_foreground():
    image, distance, camera = step_scene()
    ldi = build_layered_depth_image(image, distance, camera, band_width=5)
    band = ldi.inpainted
    # The band lies on the near side, starting at the edge and as wide as asked (square dilation: 5 + the edge).
    assert band[:, 16:22].all() and not band[:, :16].any() and not band[:, 22:].any()
    assert torch.allclose(ldi.distance[1][band], torch.full((int(band.sum()),), FAR))
    hidden_color = ldi.color[1].permute(1, 2, 0)[band]
    assert torch.allclose(hidden_color, torch.tensor(RED).expand_as(hidden_color), atol=1e-6)
    # The visible layer is the photo, untouched.
    assert torch.equal(ldi.distance[0], distance) and torch.equal(ldi.color[0], image)
    # The background pixels the band hangs from are its only sources: the far column next to the edge.
    assert ldi.background_sources[:, 15].all() and int(ldi.background_sources.sum()) == 24


def test_band_fill_never_reads_foreground_even_when_sources_are_far():
    image, distance, camera = step_scene(height=16, width=40, split=8)
    ldi = build_layered_depth_image(image, distance, camera, band_width=20)
    # The green foreground is much wider than the band's distance to the red wall; still no green leaks in.
    assert float(ldi.color[1, 1][ldi.inpainted].max()) < 1e-6


def test_threshold_adapts_to_scale_and_ignores_small_steps():
    _, distance, _ = step_scene()
    edges_units, _ = foreground_edges(distance, discontinuity_threshold(distance))
    metres = distance * 1000.0
    edges_metres, _ = foreground_edges(metres, discontinuity_threshold(metres))
    assert torch.equal(edges_units, edges_metres)
    ramp = torch.linspace(0.0, 1.5, 32).exp().expand(24, 32).clone()  # a slope: 5 % deeper per pixel
    ramp[:, 20:] *= 1.02  # a 2 % step on it is noise, not an edge
    edges, _ = foreground_edges(ramp, discontinuity_threshold(ramp))
    assert not edges.any()


def test_no_discontinuity_gives_a_single_unbroken_layer():
    height, width = 12, 20
    distance = torch.linspace(2.0, 3.0, width).expand(height, width).clone()
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))
    ldi, layered = build_photo3d(image, distance, Pinhole.from_fov(width, height), border_fraction=0.0)
    assert not ldi.inpainted.any()
    assert layered.mesh.faces.shape[0] == 2 * (height - 1) * (width - 1)
    assert layered.mesh.vertices.shape[0] == height * width
    assert (layered.tags == TAG_VISIBLE).all()


def test_mesh_connects_the_hidden_band_to_the_background_and_cuts_the_edge():
    image, distance, camera = step_scene(height=8, width=12, split=6)
    ldi = build_layered_depth_image(image, distance, camera, band_width=2)
    layered = layered_mesh(ldi)
    faces = layered.mesh.faces
    pixels = 8 * 12
    hidden = faces[(faces >= pixels).any(1)]
    assert hidden.numel() > 0 and (hidden < pixels).any(), "hidden triangles share the background's vertices"
    # No visible triangle spans the jump: all its corners are on one side.
    visible = faces[(faces < pixels).all(1)]
    columns = visible % 12
    assert ((columns < 6).all(1) | (columns >= 6).all(1)).all()
    # Vertices of the photo sit on their pixel rays at their distance (+Y up, -Z forward).
    vertex = layered.mesh.vertices[3 * 12 + 9]
    assert vertex[2].item() == pytest.approx(-NEAR)
    expected_x = (9 + 0.5 - camera.cx) / camera.fx * NEAR
    assert vertex[0].item() == pytest.approx(expected_x, rel=1e-5)
    assert (layered.tags[pixels:] == TAG_INPAINTED).all()


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (2, 2), (3, 1)])
def test_tiny_images_build(size):
    height, width = size
    image = torch.rand(3, height, width)
    distance = torch.rand(height, width) + 1.0
    ldi, layered = build_photo3d(image, distance, Pinhole.from_fov(width, height))
    assert layered.mesh.vertices.shape[0] >= height * width
    assert torch.isfinite(layered.mesh.vertices).all()


def test_bad_distance_is_a_clear_error():
    image, distance, camera = step_scene()
    distance[0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite and positive"):
        build_layered_depth_image(image, distance, camera, band_width=3)


def test_border_extension_is_tagged_and_keeps_the_photo_camera():
    image, distance, camera = step_scene()
    ldi, layered = build_photo3d(image, distance, camera, border_fraction=0.1)
    assert ldi.border == 3
    assert ldi.photo_camera == camera
    assert int((layered.tags == TAG_BORDER).sum()) == (24 + 6) * (32 + 6) - 24 * 32


def test_nearest_source_fill_reads_only_sources():
    values = torch.zeros(1, 10, 10)
    values[0, :, :3] = 5.0       # sources
    values[0, :, 6:] = 1000.0    # neither source nor region: must never leak in
    sources = torch.zeros(10, 10, dtype=torch.bool)
    sources[:, :3] = True
    region = torch.zeros_like(sources)
    region[:, 3:6] = True
    filled = nearest_source_fill(values, sources, region)
    assert torch.allclose(filled[0, :, 3:6], torch.full((10, 3), 5.0))
    assert torch.equal(filled[0, :, 6:], values[0, :, 6:])


def test_push_pull_fills_every_hole_within_the_known_range():
    values = torch.rand(3, 17, 23)
    known = torch.rand(17, 23) > 0.7
    filled = push_pull_fill(values, known)
    assert torch.equal(filled[:, known], values[:, known])
    low, high = values[:, known].min(), values[:, known].max()
    assert bool((filled >= low - 1e-6).all()) and bool((filled <= high + 1e-6).all())


def test_ply_has_the_old_extension_header_and_layout(tmp_path):
    image, distance, camera = step_scene()
    _, layered = build_photo3d(image, distance, camera)
    path = write_mesh(layered, str(tmp_path / "photo.ply"))
    header = read_ply_header(path)
    assert header["H"] == 24 and header["W"] == 32
    assert header["hFov"] == pytest.approx(math.radians(55.0), rel=1e-6)
    assert header["vFov"] == pytest.approx(2 * math.atan(12 / camera.fy), rel=1e-6)
    assert header["meanLoc"] == pytest.approx(NEAR)  # the centre pixel (row 12, column 16) is on the near box
    raw = open(path, "rb").read()
    body = raw[raw.index(b"end_header\n") + len(b"end_header\n"):]
    vertices, faces = int(header["vertex"]), int(header["face"])
    assert b"format binary_little_endian 1.0" in raw[:100]
    assert len(body) == vertices * 16 + faces * 13
    records = np.frombuffer(body[:vertices * 16], dtype=[("xyz", "<f4", 3), ("rgba", "u1", 4)])
    expected = layered.mesh.vertices.numpy() * np.array([1, -1, -1], np.float32)  # old convention: y down, z forward
    assert np.allclose(records["xyz"], expected)
    assert set(np.unique(records["rgba"][:, 3])) <= {TAG_VISIBLE, TAG_INPAINTED, TAG_BORDER}
    face_records = np.frombuffer(body[vertices * 16:], dtype=[("n", "u1"), ("i", "<i4", 3)])
    assert (face_records["n"] == 3).all() and np.array_equal(face_records["i"], layered.mesh.faces.numpy())
    assert not list(tmp_path.glob(".partial-*"))


@pytest.mark.parametrize("extension", ["glb", "obj"])
def test_glb_and_obj_open_in_trimesh(tmp_path, extension):
    import trimesh

    image, distance, camera = step_scene()
    _, layered = build_photo3d(image, distance, camera, border_fraction=0.0)
    path = write_mesh(layered, str(tmp_path / f"photo.{extension}"))
    loaded = trimesh.load(path, force="mesh", process=False)
    assert len(loaded.faces) == layered.mesh.faces.shape[0]
    assert np.allclose(loaded.bounds, torch.stack([layered.mesh.vertices.min(0).values,
                                                   layered.mesh.vertices.max(0).values]).numpy(), atol=1e-5)
    if extension == "obj":
        assert open(path).read().startswith("# H 24\n# W 32\n")


# The three networks of Shih et al. 2020, checked against the key layout of their released checkpoints.
OFFICIAL_KEYS = {
    "depth": {"enc_1.conv.input_conv.weight": (64, 4, 7, 7), "enc_1.conv.input_conv.bias": (64,),
              "enc_1.conv.mask_conv.weight": (64, 4, 7, 7), "enc_2.bn.running_var": (128,),
              "enc_3.conv.input_conv.weight": (256, 128, 5, 5), "enc_7.conv.input_conv.weight": (512, 512, 3, 3),
              "dec_7.conv.input_conv.weight": (512, 1024, 3, 3), "dec_1.conv.input_conv.weight": (1, 68, 3, 3),
              "dec_1.conv.input_conv.bias": (1,)},
    "color": {"enc_1.conv.input_conv.weight": (64, 6, 7, 7), "dec_5A.conv.input_conv.weight": (512, 1024, 3, 3),
              "dec_1A.conv.input_conv.weight": (3, 70, 3, 3), "dec_1A.conv.input_conv.bias": (3,),
              "dec_2A.bn.weight": (64,)},
    "edge": {"encoder_0.1.weight_orig": (64, 7, 7, 7), "encoder_0.1.weight_u": (64,), "encoder_0.1.weight_v": (343,),
             "encoder_0.1.bias": (64,), "middle.0.conv_block.1.weight_orig": (256, 256, 3, 3),
             "middle.7.conv_block.5.weight_v": (2304,), "decoder_0.0.weight_orig": (512, 128, 4, 4),
             "decoder_0.0.weight_u": (128,), "decoder_0.0.weight_v": (8192,), "decoder_2.1.weight": (1, 128, 7, 7)},
}


def official_edge_checkpoint(seed: int = 0):
    """An edge network in the released layout: spectral norm on every convolution but the last, u/v updated."""
    from depth_core.photo3d.networks import EdgeInpaintNet

    torch.manual_seed(seed)
    net = EdgeInpaintNet()
    for name, module in list(net.named_modules()):
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and name != "decoder_2.1":
            parent = net.get_submodule(name.rsplit(".", 1)[0])
            setattr(parent, name.rsplit(".", 1)[1], torch.nn.utils.spectral_norm(module))
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(torch.rand(1, 7, 32, 32))
    return net.eval()


def test_network_keys_match_the_released_layout():
    from depth_core.photo3d.networks import ColorInpaintNet, DepthInpaintNet

    with torch.device("meta"):  # shapes only, no 200 M random weights
        modules = (("depth", DepthInpaintNet()), ("color", ColorInpaintNet()))
    for name, module in modules:
        shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        for key, shape in OFFICIAL_KEYS[name].items():
            assert shapes.get(key) == shape, f"{name}: {key}"
        assert "enc_3.conv.input_conv.bias" not in shapes and "enc_1.bn.weight" not in shapes
    shapes = {k: tuple(v.shape) for k, v in official_edge_checkpoint().state_dict().items()}
    for key, shape in OFFICIAL_KEYS["edge"].items():
        assert shapes.get(key) == shape, f"edge: {key}"


def test_released_layout_checkpoints_load_and_run(tmp_path, monkeypatch):
    from depth_core.loading import load_state_dict
    from depth_core.photo3d import networks
    from depth_core.photo3d.networks import (ColorInpaintNet, DepthInpaintNet, EdgeInpaintNet,
                                             load_context_aware_inpainter, load_network)

    reference = official_edge_checkpoint()
    torch.save(reference.state_dict(), tmp_path / "edge-model.pth")
    torch.manual_seed(1)
    # The depth and colour networks are ~400 MB each in float32: kept in memory instead of written, same layout.
    states = {str(tmp_path / "edge-model.pth"): load_state_dict(tmp_path / "edge-model.pth")}
    for name, module in (("depth", DepthInpaintNet()), ("color", ColorInpaintNet())):
        state = module.state_dict()
        for key, value in state.items():
            if key.endswith("running_var"):
                state[key] = torch.rand_like(value) + 0.5
            elif key.endswith("running_mean"):
                state[key] = torch.randn_like(value) * 0.1
        states[str(tmp_path / f"{name}-model.pth")] = state
    monkeypatch.setattr(networks, "load_state_dict", lambda path: states[str(path)])
    # Folding spectral norm gives the same function as the spectrally normalised network in eval mode.
    edge = load_network(EdgeInpaintNet(), states[str(tmp_path / "edge-model.pth")], "edge-model.pth")
    sample = torch.rand(1, 7, 64, 64)
    with torch.no_grad():
        assert torch.allclose(edge(sample), reference(sample), atol=1e-5)

    inpainter = load_context_aware_inpainter(str(tmp_path / "edge-model.pth"), str(tmp_path / "depth-model.pth"),
                                             str(tmp_path / "color-model.pth"))
    image, distance, camera = step_scene(height=40, width=56, split=28)
    ldi = build_layered_depth_image(image, distance, camera, band_width=6, inpainter=inpainter)
    band = ldi.inpainted
    assert band.any() and torch.isfinite(ldi.color).all() and torch.isfinite(ldi.distance).all()
    # Whatever random weights predict, the hidden layer stays behind the foreground it was cut from.
    assert (ldi.distance[1][band] > ldi.distance[0][band]).all()
    assert (ldi.color[1][:, band] >= 0).all() and (ldi.color[1][:, band] <= 1).all()


def test_wrong_checkpoint_is_a_clear_error(tmp_path):
    from depth_core.photo3d.networks import ColorInpaintNet, DepthInpaintNet, load_network

    with pytest.raises(ValueError, match="not a 3d-photo-inpainting ColorInpaintNet"):
        load_network(ColorInpaintNet(), DepthInpaintNet().state_dict(), "color-model.pth")


def test_sharpening_collapses_flying_pixels_into_one_jump_and_keeps_slopes():
    from depth_core.photo3d.layers import sharpen_depth_edges

    row = torch.cat([torch.full((10,), 6.0), torch.tensor([4.5, 3.0]), torch.full((10,), 2.0)])
    distance = row.expand(8, -1).clone()
    threshold = discontinuity_threshold(distance)
    sharpened = sharpen_depth_edges(distance, 2, threshold)
    values = set(round(v, 4) for v in sharpened[4].tolist())
    assert values == {6.0, 2.0}, "the two in-between (flying) pixels joined one side or the other"
    edges, _ = foreground_edges(sharpened, threshold)
    assert int(edges[4].sum()) == 1
    slope = torch.linspace(0.0, 1.0, 24).exp().expand(8, 24).clone()  # 4 % per pixel
    assert torch.allclose(sharpen_depth_edges(slope, 2, discontinuity_threshold(slope)), slope)


def test_band_width_follows_the_parallax_of_each_jump():
    # Far wall at 8; a near box (distance 1, a large parallax) on the left and a slightly nearer panel (distance 6,
    # a small one) on the right: the band behind the small jump must be much narrower than behind the large one.
    height, width = 40, 120
    distance = torch.full((height, width), 8.0)
    distance[:, 10:30] = 1.0
    distance[:, 70:90] = 6.0
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(1))
    ldi = build_layered_depth_image(image, distance, Pinhole.from_fov(width, height), band_width=12)
    row = ldi.inpainted[20]
    large = int(row[10:30].sum())
    small = int(row[70:90].sum())
    assert large >= 20  # the whole 20-pixel box is within 12 pixels of one of its two edges
    assert 1 <= small <= 8  # parallax (1/6 - 1/8) is 1/21 of the photo's largest (1/1 - 1/8): about 1 pixel a side
    assert small < large // 2


def test_row_fill_reads_only_sources_and_their_own_surface():
    # Row: [near object 9][background 5 5 5 (sources at col 3)][hole cols 4..6][source col 7][far 5]
    values = torch.zeros(2, 1, 10)
    values[0, 0] = torch.tensor([9.0, 1.0, 2.0, 3.0, 100.0, 100.0, 100.0, 7.0, 7.0, 7.0])
    values[1, 0] = torch.tensor([0.0, 2.0, 2.0, 2.0, 0.5, 0.5, 0.5, 2.0, 2.0, 2.0])  # log distance
    sources = torch.zeros(1, 10, dtype=torch.bool)
    sources[0, 3] = sources[0, 7] = True
    region = torch.zeros_like(sources)
    region[0, 4:7] = True
    filled, done = row_source_fill(values, sources, region, max_gap=5, average=4, same_surface=0.1)
    assert done[0, 4:7].all() and not done[0, :4].any() and not done[0, 7:].any()
    # Col 4 is nearest to the left source: it averages cols 3, 2, 1 (same surface) but not col 0 (a nearer object).
    assert filled[0, 0, 4].item() == pytest.approx((3.0 + 2.0 + 1.0) / 3)
    # Cols 5 and 6 lean right (col 5 is a tie, resolved to the left): never a hole value (100) read back.
    assert filled[0, 0, 6].item() == pytest.approx(7.0)
    assert float(filled[0, 0, 4:7].max()) < 10.0


def test_stretched_border_is_smooth_along_the_edge_and_keeps_the_photo():
    image, distance, camera = step_scene()
    image[:, ::2, :] = 1.0  # horizontal stripes: a replicated border would repeat them as streaks
    ldi, _ = build_photo3d(image, distance, camera, border_fraction=0.2)
    border = ldi.border
    color = ldi.color[0]
    assert torch.equal(color[:, border:-border, border:-border], image)
    outer_column = color[:, border:-border, 0]
    assert float(outer_column.std(dim=1).max()) < 0.5 * float(image[:, :, 0].std(dim=1).max())
