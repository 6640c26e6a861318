import json

import numpy as np
import pytest
import torch

from emotionclip.transform import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FrameTransform,
    boxes_to_mask,
    boxes_to_masks,
    image_transform,
    normalize_frames,
    video_transform,
)


def test_boxes_to_mask_threshold_and_clipping():
    boxes = np.array([[10, 20, 50, 60, 0.9], [0, 0, 5, 5, 0.5], [-10, 90, 300, 200, 0.51]], dtype=np.float32)
    m = boxes_to_mask(boxes, 100, 200)
    assert m.dtype == np.uint8 and m.shape == (100, 200)
    assert m[20:60, 10:50].all() and m[:5, :5].sum() == 0  # score 0.5 is not > 0.5
    assert m[90:, :].all()  # clipped to the frame
    assert m.sum() == 40 * 40 + 10 * 200
    assert boxes_to_mask(None, 4, 4).sum() == 0
    assert boxes_to_mask(np.zeros((0, 5)), 4, 4).sum() == 0
    assert boxes_to_mask([[0, 0, 2, 2]], 4, 4).sum() == 4  # no score column: kept
    with pytest.raises(ValueError, match="boxes must be"):
        boxes_to_mask(np.zeros((2, 3)), 4, 4)
    with pytest.raises(ValueError, match="NaN"):
        boxes_to_mask([[0, 0, np.nan, 2, 1]], 4, 4)
    assert boxes_to_masks([None, [[0, 0, 2, 2, 1]]], 4, 4).shape == (2, 4, 4)


def test_mask_follows_the_pixels():
    """A white box drawn in the frame and its mask land on the same pixels after the transform."""
    h, w = 360, 480
    boxes = np.array([[300, 40, 420, 300, 1.0]])
    mask = boxes_to_mask(boxes, h, w)
    frames = (mask[None, :, :, None] * 255).repeat(3, axis=-1).repeat(2, axis=0).astype(np.uint8)
    for train, crop in ((False, "frame"), (True, "frame"), (True, "clip")):
        tf = FrameTransform(train=train, crop=crop, generator=torch.Generator().manual_seed(3))
        pixels, m = tf(frames, np.stack([mask, mask]))
        assert pixels.shape == (2, 3, 224, 224) and m.shape == (2, 224, 224) and m.dtype == torch.uint8
        white = pixels[:, 0] > 0.5  # normalised white vs black
        agree = (white == m.bool()).float().mean(dim=(1, 2))
        assert (agree > 0.99).all(), (train, crop, agree)  # each frame's mask follows its own crop
        if crop == "clip" or not train:
            assert torch.equal(m[0], m[1])  # one crop window per clip


def test_training_crops_are_per_frame_as_the_release_and_per_clip_as_an_option():
    """A static video (8 identical frames): per-frame crops differ, the per-clip option agrees."""
    g = np.random.default_rng(0)
    frame = g.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    frames = np.repeat(frame[None], 8, axis=0)
    masks = np.repeat(boxes_to_mask(np.array([[50, 60, 250, 280, 1.0]]), 300, 400)[None], 8, axis=0)
    per_frame, m_frame = FrameTransform(train=True, generator=torch.Generator().manual_seed(1))(frames, masks)
    distinct = {tuple(per_frame[k, 0, :2, :2].flatten().tolist()) for k in range(8)}
    assert len(distinct) > 1 and not torch.equal(m_frame[0], m_frame[1:].amax(0))
    clip, m_clip = FrameTransform(train=True, crop="clip", generator=torch.Generator().manual_seed(1))(
        frames, masks
    )
    assert all(torch.equal(clip[0], clip[k]) and torch.equal(m_clip[0], m_clip[k]) for k in range(8))
    with pytest.raises(ValueError, match="crop"):
        FrameTransform(crop="video")


def test_uint8_output_normalised_later_equals_the_float_path():
    frames = np.random.default_rng(2).integers(0, 256, (4, 240, 320, 3), dtype=np.uint8)
    as_float, _ = FrameTransform(train=True, generator=torch.Generator().manual_seed(5))(frames)
    raw, _ = FrameTransform(train=True, normalize=False, generator=torch.Generator().manual_seed(5))(frames)
    assert raw.dtype == torch.uint8
    assert torch.equal(normalize_frames(raw), as_float)


def test_normalisation_is_imagenet():
    frame = np.full((256, 256, 3), 255, dtype=np.uint8)
    pixels, mask = image_transform()(frame)
    assert mask is None and pixels.shape == (3, 224, 224)
    expected = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    torch.testing.assert_close(pixels[:, 100, 100], expected)


def test_short_side_resize_and_centre_crop():
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    frame[:, 320:] = 255  # right half white
    pixels, _ = video_transform()(frame[None])
    # 480x640 -> 256x341, centre crop columns 58..282: the white edge sits at 170.5 - 58 = 112
    white = pixels[0, 0, 112] > 0
    assert not white[:110].any() and white[114:].all()


def test_bad_frames():
    tf = FrameTransform()
    with pytest.raises(ValueError, match="uint8"):
        tf(np.zeros((2, 256, 256, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        tf(np.zeros((2, 3, 256, 256), dtype=np.uint8))
    with pytest.raises(ValueError, match="does not match"):
        tf(np.zeros((2, 256, 256, 3), dtype=np.uint8), np.zeros((2, 128, 128)))


def test_preprocess_config_round_trip_and_release_defaults():
    from emotionclip.transform import PreprocessConfig

    cfg = PreprocessConfig()
    assert (cfg.crop_size, cfg.resize, cfg.interpolation) == (224, 256, "bicubic")
    assert (cfg.mean, cfg.std, cfg.box_score_threshold) == (IMAGENET_MEAN, IMAGENET_STD, 0.5)
    assert PreprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert PreprocessConfig.for_crop(336).resize == 384  # the release's 256/224 ratio
    with pytest.raises(ValueError, match="interpolation"):
        PreprocessConfig(interpolation="lanczos9")
    with pytest.raises(ValueError, match="crop_size <= resize"):
        PreprocessConfig(crop_size=224, resize=200)
    with pytest.raises(ValueError, match="unknown preprocess keys"):
        PreprocessConfig.from_dict({"size": 224})


def test_transform_follows_config():
    from emotionclip.transform import PreprocessConfig

    cfg = PreprocessConfig(resize=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), box_score_threshold=0.9)
    tf = FrameTransform.from_config(cfg)
    frame = np.full((300, 224, 3), 255, dtype=np.uint8)
    pixels, _ = tf(frame)
    assert pixels.shape == (3, 224, 224)
    torch.testing.assert_close(pixels[:, 0, 0], torch.ones(3))  # (1 - 0.5) / 0.5
    masks = tf.masks_from_boxes([[[0, 0, 2, 2, 0.8]], [[0, 0, 2, 2, 0.95]]], 4, 4)
    assert masks.sum(axis=(1, 2)).tolist() == [0, 4]


def test_interpolation_is_used():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    bicubic, _ = FrameTransform()(frame)
    nearest, _ = FrameTransform(interpolation="nearest")(frame)
    assert not torch.allclose(bicubic, nearest)
