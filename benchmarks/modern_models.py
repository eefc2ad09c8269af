"""Depth Pro (1536 px multi-patch input) and Depth Anything 3 Large on the CPU: seconds per image, peak memory, and
agreement with the authors' code on the same random checkpoint.

The baseline is the authors' own code run in this process, where a checkout of it is given (it is never part of this
repository):

    DEPTH_PRO_SRC=/path/to/ml-depth-pro/src DA3_SRC=/path/to/Depth-Anything-3/src \\
        .venv/bin/python benchmarks/modern_models.py [depth_pro] [da3]

Without a checkout the pack's own figures are printed alone. Random weights (speed and memory do not depend on their
values); one 600 x 800 photo-sized input; fp32 on the CPU.
"""
from __future__ import annotations

import gc
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import machine_line, peak_memory  # noqa: E402

from depth_core import registry  # noqa: E402

HEIGHT, WIDTH = 600, 800


def _timed(run):
    with peak_memory() as memory:
        start = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - start
    return result, seconds, memory.added_mib


def _stub_module(name: str, **attributes) -> None:
    """Stand-ins for packages the authors' code imports but these networks do not use (Hub/config helpers)."""
    try:
        __import__(name)
    except ImportError:
        module = type(sys)(name)
        module.__dict__.update(attributes)
        sys.modules[name] = module


def _authors_depth_pro(source: str):
    """The authors' DepthPro with random weights (a plausible field of view), and its state dict saved to a file."""
    sys.path.insert(0, source)
    _stub_module("pillow_heif", register_heif_opener=lambda: None)  # their image reader's HEIF support
    from dataclasses import replace

    from depth_pro.depth_pro import DEFAULT_MONODEPTH_CONFIG_DICT, create_model_and_transforms

    torch.manual_seed(0)
    model, _ = create_model_and_transforms(replace(DEFAULT_MONODEPTH_CONFIG_DICT, checkpoint_uri=None))
    with torch.no_grad():
        model.head[4].weight.abs_()
        model.head[4].bias.fill_(0.05)
        model.fov.head[-1].bias.add_(60.0)
    return model.eval()


def depth_pro_figures() -> None:
    from depth_core.models import depth_pro

    print(f"\n## Depth Pro ({machine_line()})")
    image = torch.rand(1, HEIGHT, WIDTH, 3, generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "depth_pro.pt"
        source = os.environ.get("DEPTH_PRO_SRC")
        reference = None
        if source:
            model = _authors_depth_pro(source)
            torch.save(model.state_dict(), path)
            x = image.permute(0, 3, 1, 2) * 2 - 1
            with torch.no_grad():
                reference, seconds, added = _timed(lambda: model.infer(x))
            print(f"authors' code: {seconds:.1f} s/image, peak memory +{added:.0f} MiB (weights loaded before)")
            del model
            gc.collect()
        else:
            torch.manual_seed(0)
            torch.save(depth_pro.build().state_dict(), path)
        estimator, seconds, added = _timed(lambda: registry.build_estimator(path))
        print(f"depth_core loading: {seconds:.1f} s, peak memory +{added:.0f} MiB (file and network)")
        depth, seconds, added = _timed(lambda: estimator.predict(image))
        print(f"depth_core:    {seconds:.1f} s/image, peak memory +{added:.0f} MiB (weights loaded before)")
        if reference is not None:
            focal = 0.5 * WIDTH / math.tan(math.radians(depth.fov_degrees[0]) / 2)
            relative = ((depth.values[0] - reference["depth"]).abs() / reference["depth"]).max().item()
            print(f"max relative depth difference to the authors' code: {relative:.2e}; focal length "
                  f"{focal:.2f} px vs {float(reference['focallength_px']):.2f} px")


def _authors_da3(source: str):
    """The authors' DepthAnything3Net for da3mono-large (DinoV2 vitl + DPT), random weights."""
    sys.path.insert(0, source)

    class AttributeDict(dict):
        __getattr__, __setattr__, __delattr__ = dict.__getitem__, dict.__setitem__, dict.__delitem__

    _stub_module("addict", Dict=AttributeDict)
    _stub_module("omegaconf", DictConfig=dict, ListConfig=list, OmegaConf=type("OmegaConf", (), {}))
    from depth_anything_3.model.da3 import DepthAnything3Net
    from depth_anything_3.model.dinov2.dinov2 import DinoV2
    from depth_anything_3.model.dpt import DPT

    torch.manual_seed(0)
    backbone = DinoV2(name="vitl", out_layers=[4, 11, 17, 23], alt_start=-1, qknorm_start=-1, rope_start=-1,
                      cat_token=False)
    head = DPT(dim_in=1024, output_dim=1, features=256, out_channels=[256, 512, 1024, 1024])
    return DepthAnything3Net(backbone, head).eval()


def da3_figures() -> None:
    from safetensors.torch import save_file

    from depth_core.models import depth_anything_3

    print(f"\n## Depth Anything 3 Mono Large ({machine_line()})")
    image = torch.rand(1, HEIGHT, WIDTH, 3, generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "DA3MONO-LARGE.safetensors"
        source = os.environ.get("DA3_SRC")
        reference = x = None
        if source:
            model = _authors_da3(source)
            save_file({f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(path))
        else:
            torch.manual_seed(0)
            save_file({k: v.contiguous() for k, v in depth_anything_3.build().state_dict().items()}, str(path))
        estimator = registry.build_estimator(path)
        x = estimator.prepare(image.permute(0, 3, 1, 2), estimator.input_size(HEIGHT, WIDTH))
        if source:
            reference, seconds, added = _timed(lambda: model(x[:, None], export_feat_layers=[]))
            print(f"authors' network: {seconds:.1f} s/image at {tuple(x.shape[-2:])}, peak memory +{added:.0f} MiB")
            del model
            gc.collect()
        _, seconds, added = _timed(lambda: estimator.predict(image))
        print(f"depth_core (whole estimate): {seconds:.1f} s/image, peak memory +{added:.0f} MiB (weights loaded "
              "before)")
        if reference is not None:
            depth, _ = estimator.network.depth_and_sky(x)
            relative = ((depth - reference["depth"][:, 0]).abs() / reference["depth"][:, 0]).max().item()
            print(f"max relative depth difference to the authors' network: {relative:.2e}")


def main() -> None:
    torch.set_grad_enabled(False)
    wanted = set(sys.argv[1:]) or {"depth_pro", "da3"}
    if "depth_pro" in wanted:
        depth_pro_figures()
    if "da3" in wanted:
        da3_figures()


if __name__ == "__main__":
    main()
