"""Video datasets, decoding, clip sampling and transforms."""

from .hmdb51 import HMDB51
from .kinetics import Kinetics
from .lists import VideoFolder, VideoList
from .io import DecodedFrames, VideoDecodeError, VideoInfo, available_backends, probe, read_frames, read_video
from .synthetic import make_synthmotion
from .transforms import ClipConfig, build_transforms
from .ucf101 import UCF101
from .video_dataset import VideoDataset, collate_clips

__all__ = [
    "HMDB51", "Kinetics", "UCF101", "VideoFolder", "VideoList", "VideoDataset", "collate_clips", "ClipConfig", "build_transforms",
    "DecodedFrames", "VideoDecodeError", "VideoInfo", "available_backends", "probe", "read_frames", "read_video",
    "make_synthmotion",
]
