"""Video datasets and decoding. See ``io`` (decoders) and ``synthetic`` (SynthMotion)."""

from .io import VideoDecodeError, VideoInfo, available_backends, probe, read_frames
from .synthetic import make_synthmotion

__all__ = ["VideoDecodeError", "VideoInfo", "available_backends", "probe", "read_frames", "make_synthmotion"]
