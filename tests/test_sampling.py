"""Clip sampling: exact indices, spread, looping of short videos, reproducibility."""

import pytest
import torch

from softpool3d.datasets.sampling import clip_span, train_clip_indices, uniform_clip_indices


def test_train_clip_is_a_strided_window_inside_the_video():
    gen = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(300):
        clip = train_clip_indices(40, 8, 2, generator=gen)
        assert len(clip) == 8 and all(b - a == 2 for a, b in zip(clip, clip[1:]))
        assert 0 <= clip[0] and clip[-1] < 40
        starts.add(clip[0])
    assert starts == set(range(40 - clip_span(8, 2) + 1))      # every start is reachable


def test_train_clip_is_reproducible_for_a_generator():
    a = [train_clip_indices(100, 16, 4, torch.Generator().manual_seed(5)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


def test_short_video_loops():
    clip = train_clip_indices(5, 8, 1, torch.Generator().manual_seed(1))
    assert len(clip) == 8 and all((b - a) % 5 == 1 for a, b in zip(clip, clip[1:]))
    assert uniform_clip_indices(3, 4, 2, num_clips=1) == [[1, 0, 2, 1]]


def test_uniform_clips_are_spread_evenly():
    clips = uniform_clip_indices(100, 8, 2, num_clips=10)
    assert len(clips) == 10 and all(len(c) == 8 for c in clips)
    starts = [c[0] for c in clips]
    assert starts == sorted(starts) and starts[0] >= 0 and clips[-1][-1] < 100
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert max(gaps) - min(gaps) <= 1
    assert uniform_clip_indices(100, 8, 2, num_clips=1) == [list(range(42, 42 + 15, 2))]   # the middle clip


@pytest.mark.parametrize("args", [(0, 8, 1), (10, 0, 1), (10, 8, 0)])
def test_bad_arguments(args):
    with pytest.raises(ValueError):
        train_clip_indices(*args)
    with pytest.raises(ValueError):
        uniform_clip_indices(*args)
    with pytest.raises(ValueError, match="num_clips"):
        uniform_clip_indices(10, 2, 1, num_clips=0)
