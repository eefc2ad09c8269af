"""DepthToolkit.Stereo360: top-bottom omni-directional stereo (ODS) of a 360° panorama, for VR players."""
from __future__ import annotations

from comfy_api.latest import io

from ..depth_core.panorama import DEFAULT_POLE_MERGE_DEGREES, PANORAMA_STEREO_TAG, OdsSettings, check_panorama, ods_views
from ..depth_core.stereo import FILL_MODES, compose_layout
from ._common import CATEGORY, comfy_progress, compute_device, depth_input, read_depth, to_output_device
from .stereo import save_pngs

DEFAULT_FILENAME_PREFIX = "DepthToolkit/panorama"


class Stereo360(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DepthToolkit.Stereo360",
            display_name="Stereo 360° (ODS top-bottom)",
            category=f"{CATEGORY}/stereo",
            description=(
                "Turns a 360° equirectangular panorama and its depth into omni-directional stereo for VR headsets: "
                "the left eye's panorama above the right eye's, each column seen by eyes on a circle around the "
                "centre, sideways to the view direction, so the 3D is right whichever way you look. Fades to flat "
                "at the zenith and nadir. Saves a PNG named ..._360_TB.png, which VR players recognise."
            ),
            inputs=[
                io.Image.Input("images", tooltip="The 360° equirectangular panorama(s), 2:1 (a batch is treated "
                                                 "as video frames)."),
                depth_input("depth", tooltip="Depth of the panorama: Depth Estimate's DEPTH in panorama mode (the "
                                             "distance from the centre; metric models keep metres), or any depth "
                                             "IMAGE with near = white. Resized to the panorama."),
                io.Float.Input("divergence", default=0.75, min=0.0, max=20.0, step=0.05,
                               tooltip="Relative depth: 3D strength, the shift between the eyes for the nearest "
                                       "point, in % of the panorama's width. A panorama spans 360°, several screens "
                                       "wide, so 0.5-1 is comfortable."),
                io.Float.Input("depth_exponent", default=1.0, min=0.1, max=4.0, step=0.05,
                               tooltip="Relative depth: shift grows with nearness ** exponent; above 1 flattens "
                                       "the background."),
                io.Combo.Input("depth_mode", options=["auto", "relative", "metric"], default="auto",
                               tooltip="auto: metric for metric depth (metres), else relative. metric: the true "
                                       "eye geometry from the eye distance below (needs metric depth)."),
                io.Float.Input("ipd_mm", default=65.0, min=1.0, max=10000.0, step=1.0,
                               tooltip="Metric depth only: distance between the eyes in millimetres (people: about "
                                       "65). Larger = stronger 3D, like a miniature world."),
                io.Float.Input("pole_merge_degrees", default=DEFAULT_POLE_MERGE_DEGREES, min=0.0, max=90.0, step=1.0,
                               tooltip="Above this latitude the 3D fades out towards straight up and straight down, "
                                       "where omni-directional stereo cannot be right (it would show a twisted "
                                       "double image). 90 = no fading."),
                io.Combo.Input("fill", options=list(FILL_MODES), default="background",
                               tooltip="How gaps beside near objects are filled (the Stereo Image node's fills): "
                                       "background is the surface behind, smoothed; none leaves them black."),
                io.Combo.Input("normalize", options=["per image", "whole batch"], default="per image",
                               tooltip="Relative depth: per image, or one range for all frames of a video."),
                io.String.Input("filename_prefix", default=DEFAULT_FILENAME_PREFIX,
                                tooltip="Where the top-bottom PNG is saved in the output folder; the name ends in "
                                        f"{PANORAMA_STEREO_TAG} so VR players (Skybox, DeoVR, Pigasus, Moon) open "
                                        "it as 360° top-bottom stereo. Empty: do not save."),
            ],
            outputs=[
                io.Image.Output("stereo", tooltip="Left eye's panorama above the right eye's (full resolution "
                                                  "each: a 2:1 panorama gives a 1:1 picture)."),
                io.Image.Output("left", tooltip="The left eye's panorama."),
                io.Image.Output("right", tooltip="The right eye's panorama."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, depth, divergence, depth_exponent, depth_mode, ipd_mm, pole_merge_degrees, fill,
                normalize, filename_prefix) -> io.NodeOutput:
        if images.shape[0] == 0:
            raise ValueError("The image batch is empty: connect a 360° panorama.")
        check_panorama(images)
        settings = OdsSettings(divergence=divergence, exponent=depth_exponent, ipd_mm=ipd_mm, depth_mode=depth_mode,
                               pole_merge_degrees=pole_merge_degrees, per_image=normalize == "per image")
        left, right = ods_views(images, read_depth(depth), settings, fill, compute_device(),
                                comfy_progress(images.shape[0]))
        stereo = compose_layout(left, right, "top-bottom")
        if filename_prefix.strip():
            files = save_pngs(stereo, filename_prefix.strip(), "output", PANORAMA_STEREO_TAG)
        else:
            files = save_pngs(stereo, "DepthToolkit_stereo360")
        ui = {"images": files, "animated": (False,)}
        return io.NodeOutput(to_output_device(stereo), to_output_device(left), to_output_device(right), ui=ui)


NODES = [Stereo360]
