"""Video Depth Anything (official layouts, strict loading, the authors' offline windows reproduced while streaming,
streaming mode) and depth for videos from any image network (stabilization, scene cuts)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from depth_core.depth import DepthKind
from depth_core.estimate import DepthEstimator
from depth_core.models import depth_anything_v2, video_depth_anything as vda
from depth_core.models.base import IMAGENET_MEAN, IMAGENET_STD, relative_card
from depth_core.postprocess import flicker
from depth_core.registry import build_estimator, identify
from depth_core.video_depth import (
    NearnessRange,
    SceneCutDetector,
    VideoDepthEstimator,
    image_model_video_depth,
    streaming_depth,
    video_depth_chunks,
    video_network_size,
    windowed_depth,
)
from test_model_architectures import _meta_state_dict, _official_shapes, _random_network
from vda_reference import reference_video_depth
from video_clips import pan_frames, scene_cut_frames

TINY = 28
"""Network size for tests: 2 x 3 patches for 48 x 64 frames, so a 32-frame window takes well under a second."""


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The networks here are tiny: on a busy machine, thread hand-offs cost more than the arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _frames(count: int, **kwargs) -> torch.Tensor:
    return torch.from_numpy(pan_frames(count, 48, 64, **kwargs)).float() / 255.0


def _chunks(frames: torch.Tensor, size: int):
    return (frames[start:start + size] for start in range(0, frames.shape[0], size))


def vda_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random Video Depth Anything Small weights in the official layout; a positive last layer keeps depth > 0."""
    _, state_dict = _random_network(vda, vda.SMALL, seed)
    state_dict["head.scratch.output_conv2.2.weight"] = state_dict["head.scratch.output_conv2.2.weight"].abs()
    state_dict["head.scratch.output_conv2.2.bias"].fill_(0.01)
    return state_dict


@pytest.fixture(scope="module")
def vda_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vda") / "video_depth_anything_vits.pth"
    torch.save(vda_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def vda_estimator(vda_file):
    return build_estimator(vda_file)


@pytest.mark.parametrize("known", vda.KNOWN_MODELS, ids=[k.filename for k in vda.KNOWN_MODELS])
def test_state_dict_matches_official_layout_and_is_recognised_first(known):
    with torch.device("meta"):
        network = vda.build(known.config)
    ours = {key: list(value.shape) for key, value in network.state_dict().items()}
    official = _official_shapes(known.filename)
    assert ours == official
    state_dict = _meta_state_dict(official)
    module, config = identify(state_dict)
    assert module is vda
    assert vda.config_for_variant(config, "auto", known.filename) == known.config
    assert depth_anything_v2.config_from_state_dict(state_dict) is None
    assert known.card.output_kind is (DepthKind.METRIC if known.filename.startswith("metric_") else
                                      DepthKind.RELATIVE_INVERSE)


def test_licences_follow_the_authors():
    licences = {known.filename: known.license for known in vda.KNOWN_MODELS}
    assert licences["video_depth_anything_vits.pth"] == "Apache-2.0"
    assert licences["metric_video_depth_anything_vits.pth"] == "Apache-2.0"
    for name in ("video_depth_anything_vitb.pth", "video_depth_anything_vitl.pth",
                 "metric_video_depth_anything_vitb.pth", "metric_video_depth_anything_vitl.pth"):
        assert licences[name] == "CC-BY-NC-4.0"


@pytest.mark.parametrize("filename", ["video_depth_anything_vits.pth", "metric_video_depth_anything_vitl.pth"])
def test_missing_file_offline_names_file_folder_and_official_address(tmp_path, filename):
    from depth_core.loading import ModelFileMissingError
    from depth_core.model_files import ModelFiles, ModelFolders

    with pytest.raises(ModelFileMissingError) as error:
        ModelFiles(ModelFolders.of([tmp_path]), allow_download=False).depth_network(filename)
    message = str(error.value)
    assert filename in message and str(tmp_path) in message
    assert f"huggingface.co/depth-anything/{'Metric-' if filename.startswith('metric') else ''}Video-Depth-Anything-" \
           in message


def test_checkpoint_loads_strictly_into_a_video_estimator(vda_file, tmp_path):
    estimator = build_estimator(vda_file)
    assert isinstance(estimator, VideoDepthEstimator) and estimator.output_kind is DepthKind.RELATIVE_INVERSE
    metric_file = tmp_path / "metric_video_depth_anything_vits.pth"
    metric_file.write_bytes(vda_file.read_bytes())
    metric = build_estimator(metric_file)
    assert metric.output_kind is DepthKind.METRIC and metric.network.config.metric
    assert build_estimator(vda_file, variant="metric indoor").network.config.metric
    damaged = torch.load(vda_file, weights_only=True)
    del damaged["head.motion_modules.2.temporal_transformer.transformer_blocks.0.ff.net.2.weight"]
    torch.save(damaged, tmp_path / "damaged.pth")
    with pytest.raises(Exception, match="weights do not fit|not a depth network"):
        build_estimator(tmp_path / "damaged.pth")


def test_window_depends_on_the_other_frames(vda_estimator):
    """The temporal modules mix frames: changing one frame changes its neighbours' depth."""
    network = vda_estimator.network
    frames = vda_estimator.prepare(_frames(6).permute(0, 3, 1, 2), (TINY, 42))
    with torch.no_grad():
        depth = network(frames)
        changed = frames.clone()
        changed[5] = changed[5].flip(-1)
        other = network(changed)
    assert depth.shape == (6, TINY, 42) and (depth >= 0).all() and depth.std() > 0
    assert (depth[0] - other[0]).abs().max() > 1e-4 * depth.abs().max()


@pytest.mark.parametrize(("count", "chunk"), [(53, 16), (9, 4)])
def test_streamed_windows_equal_the_authors_offline_inference(vda_estimator, count, chunk):
    """Clip lengths that are not multiples of the 22-frame stride, fed in chunks of another size."""
    frames = _frames(count)
    streamed = torch.cat(list(windowed_depth(vda_estimator, _chunks(frames, chunk), resolution=TINY)))
    size = video_network_size(vda_estimator, 48, 64, TINY)
    inputs = vda_estimator.prepare(frames.permute(0, 3, 1, 2), size)
    reference = reference_video_depth(vda_estimator.network, inputs, (48, 64))
    assert streamed.shape == (count, 48, 64)
    np.testing.assert_allclose(streamed.numpy(), reference, rtol=1e-4, atol=1e-4 * float(np.abs(reference).max()))


def test_metric_windows_are_not_rescaled(vda_file, tmp_path):
    metric_file = tmp_path / "metric_video_depth_anything_vits.pth"
    metric_file.write_bytes(vda_file.read_bytes())
    estimator = build_estimator(metric_file)
    frames = _frames(27)
    streamed = torch.cat(list(windowed_depth(estimator, _chunks(frames, 8), resolution=TINY)))
    inputs = estimator.prepare(frames.permute(0, 3, 1, 2), video_network_size(estimator, 48, 64, TINY))
    reference = reference_video_depth(estimator.network, inputs, (48, 64), metric=True)
    np.testing.assert_allclose(streamed.numpy(), reference, rtol=1e-4, atol=1e-4 * float(np.abs(reference).max()))


def test_depth_leaves_as_soon_as_it_is_final(vda_estimator):
    """Memory is bounded by one window: the first 24 frames leave after 32 were read, then 22 per 22 more."""
    frames = _frames(55)
    read = 0

    def counted():
        nonlocal read
        for frame in frames:
            read += 1
            yield frame[None]

    seen = []
    for depth in windowed_depth(vda_estimator, counted(), resolution=TINY):
        seen.append((read, depth.shape[0]))
    assert seen[0] == (33, 24)  # the 33rd frame is read to learn that a second window exists
    assert all(emitted == 22 for _, emitted in seen[1:-1])
    assert max(r - (sum(e for _, e in seen[:i + 1])) for i, (r, _) in enumerate(seen)) <= 32
    assert [emitted for _, emitted in seen] == [24, 22, 9]
    assert sum(emitted for _, emitted in seen) == 55


def test_streaming_mode_is_causal_one_frame_at_a_time(vda_estimator):
    frames = _frames(14)
    depth = list(streaming_depth(vda_estimator, _chunks(frames, 3), resolution=TINY))
    assert len(depth) == 14 and all(d.shape == (1, 48, 64) for d in depth)
    changed_future = frames.clone()
    changed_future[10:] = changed_future[10:].flip(1)
    again = list(streaming_depth(vda_estimator, _chunks(changed_future, 3), resolution=TINY))
    for before, after in zip(depth[:10], again[:10]):
        torch.testing.assert_close(before, after)
    assert not torch.allclose(depth[12], again[12])
    # Frame 0 alone is the network's depth of that single frame.
    single = vda_estimator.network(vda_estimator.prepare(frames[:1].permute(0, 3, 1, 2), (TINY, 42)))
    expected = torch.nn.functional.interpolate(single[None], size=(48, 64), mode="bilinear", align_corners=True)[0]
    torch.testing.assert_close(depth[0], expected, rtol=1e-4, atol=1e-5)


def test_streaming_mode_keeps_a_bounded_history(vda_estimator):
    """Past 41 frames the cached history stops growing (its first frame plus the most recent ones)."""
    lengths = []
    original = torch.cat

    def spy(tensors, dim=0, **kwargs):
        if dim == 1 and isinstance(tensors, list) and len(tensors) > 2:
            lengths.append(len(tensors))
        return original(tensors, dim=dim, **kwargs)

    frames = _frames(1).expand(45, -1, -1, -1)
    torch.cat = spy
    try:
        list(streaming_depth(vda_estimator, [frames], resolution=TINY))
    finally:
        torch.cat = original
    assert set(lengths) == {31}


def test_image_batch_is_treated_as_a_video(vda_estimator):
    frames = _frames(27)
    depth = vda_estimator.predict(frames, resolution=TINY)
    windows = torch.cat(list(windowed_depth(vda_estimator, [frames], resolution=TINY)))
    torch.testing.assert_close(depth.values, windows)
    single = vda_estimator.predict(frames[:1], resolution=TINY)  # one image = a one-frame video
    assert single.values.shape == (1, 48, 64) and torch.isfinite(single.values).all()


class FlickeringBrightness(torch.nn.Module):
    """A stand-in image network whose output drifts in scale and offset from call to call, like real networks'
    unknown per-image scale and shift: depth = a * mean colour + b with a, b random per image."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.generator = torch.Generator().manual_seed(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 1 + 0.3 * torch.rand(x.shape[0], 1, 1, generator=self.generator)
        offset = 0.5 * torch.rand(x.shape[0], 1, 1, generator=self.generator)
        return x.mean(1) * scale + offset + 3.0 + self.anchor


def flickering_estimator() -> DepthEstimator:
    card = relative_card("flicker", "test", 32, 1, "lower_bound", IMAGENET_MEAN, IMAGENET_STD)
    return DepthEstimator(card, FlickeringBrightness())


def _unit_pictures(values: torch.Tensor) -> torch.Tensor:
    return (values - values.min()) / (values.max() - values.min())


def test_image_model_video_depth_is_stabilized_in_chunks():
    frames = torch.from_numpy(pan_frames(40, 48, 64, travel=0.0, noise=2.0)).float() / 255.0  # static camera
    raw = torch.cat(list(image_model_video_depth(flickering_estimator(), _chunks(frames, 6), stabilize=False)))
    steady = torch.cat(list(image_model_video_depth(flickering_estimator(), _chunks(frames, 6), stabilize=True)))
    assert steady.shape == raw.shape == (40, 48, 64)
    assert flicker(_unit_pictures(steady)) < 0.25 * flicker(_unit_pictures(raw))
    # The first frame sets the scale and the rest follow it: no drift of every scale towards zero.
    torch.testing.assert_close(steady[0], raw[0])
    assert 0.8 < float(steady.mean() / raw.mean()) < 1.25 and float(steady[-1].std() / steady[0].std()) > 0.8


def test_scene_cuts_are_found_and_stabilization_restarts_there():
    frames = torch.from_numpy(scene_cut_frames(30, 48, 64, cut_at=17)).float() / 255.0
    detector = SceneCutDetector()
    cuts = [start + index for start, chunk in zip(range(0, 30, 7), _chunks(frames, 7))
            for index in detector.cuts(chunk)]
    assert cuts == [17]
    steady = torch.cat(list(image_model_video_depth(flickering_estimator(), _chunks(frames, 7))))
    smeared = torch.cat(list(image_model_video_depth(flickering_estimator(), _chunks(frames, 7),
                                                     cut_threshold=1.0)))
    # After the cut, depth follows the new shot's own content, not a fit to the old shot's frames.
    new_shot = flickering_estimator().predict(frames[17:18]).values

    def error(values: torch.Tensor) -> float:
        return float((values[17] - values[17].mean() - (new_shot[0] - new_shot[0].mean())).abs().mean())

    assert error(steady) < error(smeared)


def test_image_models_run_through_the_common_entry_point(vda_estimator):
    frames = _frames(10)
    image = list(video_depth_chunks(flickering_estimator(), _chunks(frames, 4), total=10))
    assert [c.shape[0] for c in image] == [4, 4, 2]
    streamed = list(video_depth_chunks(vda_estimator, _chunks(frames, 4), TINY, mode="streaming"))
    assert len(streamed) == 10
    with pytest.raises(ValueError, match="windows, streaming"):
        list(video_depth_chunks(vda_estimator, _chunks(frames, 4), TINY, mode="sideways"))


def test_nearness_range_maps_depth_to_16_bit_codes_and_back():
    relative = torch.rand(3, 8, 8) * 5 + 1
    mapping = NearnessRange.from_frames(relative, DepthKind.RELATIVE_INVERSE)
    codes = mapping.codes(relative)
    assert codes.dtype == np.uint16 and codes.max() < 65535 and codes.min() > 0
    restored = mapping.values_from_codes(codes)
    assert float((restored - relative).abs().max()) < (mapping.high - mapping.low) / 65535
    metres = torch.rand(2, 8, 8) * 10 + 1
    metric = NearnessRange.from_tags(NearnessRange.from_frames(metres, DepthKind.METRIC).tags())
    assert metric.kind is DepthKind.METRIC
    near_bright = metric.codes(metres)
    assert near_bright.flatten()[metres.flatten().argmin()] == near_bright.max()  # near = bright
    torch.testing.assert_close(metric.values_from_codes(near_bright), metres, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="depth range tags"):
        NearnessRange.from_tags({})


def test_frames_of_different_sizes_are_refused(vda_estimator):
    chunks = [_frames(3), torch.rand(2, 40, 64, 3)]
    with pytest.raises(ValueError, match="one size"):
        list(itertools.islice(streaming_depth(vda_estimator, chunks, resolution=TINY), 10))
