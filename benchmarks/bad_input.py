"""What the guards against bad input cost, and what they save (issue 19).

1. Interrupt checks between network blocks: Depth Anything V2 Small at 518 px with and without the hooks (a check
   that never interrupts, as ComfyUI's is while nobody presses Cancel), in the same process.
2. The network-input cap: a 200x1 strip at native resolution, the plan the authors' rule gives and the capped plan,
   and the measured time of the capped run (the uncapped plan is not run: it is the hours the issue reports;
   its cost is estimated from the measured seconds per network pixel of the 518 px run).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import best_time, machine_line  # noqa: E402

from depth_core.estimate import DepthEstimator  # noqa: E402
from depth_core.interrupt import network_blocks, set_interrupt_check  # noqa: E402
from depth_core.models import depth_anything_v2  # noqa: E402


def main() -> None:
    print(machine_line())
    torch.manual_seed(0)
    estimator = DepthEstimator(depth_anything_v2.KNOWN_MODELS[0].card, depth_anything_v2.build(depth_anything_v2.SMALL))
    image = torch.rand(1, 3, 518, 518)
    set_interrupt_check(None)
    plain = best_time(lambda: estimator.infer(image), repeats=5)
    checks = []
    set_interrupt_check(lambda: checks.append(1))
    hooked = best_time(lambda: estimator.infer(image), repeats=5)
    per_pass = len(checks) // 6
    set_interrupt_check(None)
    print(f"interrupt checks: {len(network_blocks(estimator.network))} blocks hooked, {per_pass} checks per pass")
    print(f"DA-V2-S 518x518: without checks {plain * 1000:.0f} ms, with checks {hooked * 1000:.0f} ms, "
          f"ratio {hooked / plain:.3f}")

    planned = estimator.planned_size(1, 200)
    capped = estimator.input_size(1, 200)
    strip = torch.rand(1, 1, 200, 3)
    capped_time = best_time(lambda: estimator.predict(strip), repeats=1, warmup=0)
    seconds_per_pixel = plain / (518 * 518)
    print(f"200x1 strip: authors' plan {planned[1]}x{planned[0]} ({planned[0] * planned[1] / 1e6:.1f} MP, "
          f"at least {planned[0] * planned[1] * seconds_per_pixel / 60:.0f} min at the 518 px rate, more with "
          f"attention's quadratic cost), capped plan {capped[1]}x{capped[0]} "
          f"({capped[0] * capped[1] / 1e6:.2f} MP): {capped_time:.1f} s")


if __name__ == "__main__":
    main()
