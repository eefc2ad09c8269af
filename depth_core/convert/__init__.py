"""Video to 3D: streamed, resumable stereo conversion of whole videos (see pipeline.py), optionally on Ray."""
from .depth_sources import DepthSource, DepthSpec, DepthVideoSource, ModelDepth
from .layouts import FORMATS, FrameComposer, format_tag
from .pipeline import (ConversionError, ConversionReport, ConvertOptions, VideoPlan, convert_segment, convert_videos,
                       finish_video, list_videos, plan_video)

__all__ = ["ConversionError", "ConversionReport", "ConvertOptions", "DepthSource", "DepthSpec", "DepthVideoSource",
           "FORMATS", "FrameComposer", "ModelDepth", "VideoPlan", "convert_segment", "convert_videos",
           "finish_video", "format_tag", "list_videos", "plan_video"]
