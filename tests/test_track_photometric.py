"""``track --mode photometric``: tiny clips, tiny photometric stages (64² crops, a few steps, two compilations: the
keyframes' joint stage and the refinement)."""

from __future__ import annotations

import dataclasses
import json

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flamejax.fit import AMBIENT_SH, GroupSchedule, PhotometricConfig
from flamejax.camera import yaw_pitch_roll
from flamejax.render import RasterConfig, load_uv_layout, render_mesh
from flamejax.track import (STATUS_REASONS, PhotometricTrackConfig, frame_picture, refine_photometric,
                            synthetic_sequence, track_landmarks, track_video)
from flamejax.track import _photometric_track
from flamejax.flame import flame_forward
from tests.conftest import requires_flame
from tests.test_track import TINY, VIDEOS

pytestmark = requires_flame
SIZE = 64
_HELD = GroupSchedule(0.0)
_STAGE = dict(steps=6, shape_start=1, texel_start=2, pyramid=((2, 1.0),), texture_size=SIZE,
              raster=RasterConfig(image_size=SIZE))
# The frames' stage runs at the size its errors are scored at: a few steps at half size cannot better a start the
# keyframes' baked albedo already explains to a few thousandths, and would be scored against it at full size.
PHOTO = PhotometricTrackConfig(keyframes=4, batch_frames=4, image_size=SIZE, appearance=PhotometricConfig(**_STAGE),
                               refine=PhotometricConfig(**{**_STAGE, "pyramid": ((1, 1.0),)}, shape=_HELD,
                                                        texture=_HELD, texel=_HELD))
TINY_PHOTO = TINY.replace(photometric=PHOTO)


class _Spy:
    """Wraps the refinement's ``fit_photometric_batch`` (``calls``: each call's appearance and result) and the
    keyframes' ``fit_photometric_same_person`` (``keyframe_calls``: each result)."""

    def __init__(self, monkeypatch):
        self.calls, self.keyframe_calls = [], []
        refine, keyframes = _photometric_track.fit_photometric_batch, _photometric_track.fit_photometric_same_person

        def refine_spy(*args, appearance=None):
            result = refine(*args, appearance=appearance)
            self.calls.append((appearance, jax.tree.map(np.asarray, result)))
            return result

        def keyframes_spy(*args):
            result = keyframes(*args)
            self.keyframe_calls.append(jax.tree.map(np.asarray, result))
            return result

        monkeypatch.setattr(_photometric_track, "fit_photometric_batch", refine_spy)
        monkeypatch.setattr(_photometric_track, "fit_photometric_same_person", keyframes_spy)


def test_keyframes_spread_over_the_clips_yaws():
    yaw = np.array([0.0, 2.0, 10.0, 20.0, 30.0, 38.0, 60.0, 25.0, -5.0, -20.0, -31.0, -70.0])
    usable = np.ones(len(yaw), bool)
    usable[9] = False
    # Wanted -31, -13.75, 3.5, 20.75, 38 within ±45; row 9 (-20) unusable, rows 6 and 11 beyond 45.
    assert _photometric_track.pick_keyframes(usable, yaw, 5) == [1, 3, 5, 8, 10]
    assert _photometric_track.pick_keyframes(usable, yaw, 20) == np.flatnonzero(usable).tolist()
    # Fewer than 4 usable rows within ±45 (three of them): all are candidates; wanted -70, -26.7, 16.7, 60.
    assert _photometric_track.pick_keyframes(np.isin(np.arange(12), [0, 6, 7, 10, 11]), yaw, 4) == [6, 7, 10, 11]
    still = np.linspace(-3.0, 3.0, 12)  # a clip that barely turns: usable rows spread in time
    assert _photometric_track.pick_keyframes(usable, still, 3) == [0, 5, 11]


def test_keyframes_prefer_confident_frames_near_each_yaw():
    yaw = np.array([0.0, 2.0, 10.0, 20.0, 30.0, 38.0, 60.0, 25.0, -5.0, -20.0, -31.0, -70.0])
    usable = np.ones(len(yaw), bool)
    usable[9] = False
    confidence = np.full(len(yaw), 0.8)
    confidence[[1, 3]] = [0.2, np.nan]  # the nearest to the wanted 3.5 and 20.75 are poor fits
    # 3.5: row 0 (3.5 away, within 4 of row 1's 1.5); 20.75: row 7 (25, within 4 of row 3's 0.75).
    assert _photometric_track.pick_keyframes(usable, yaw, 5, confidence) == [0, 5, 7, 8, 10]
    assert _photometric_track.pick_keyframes(usable, yaw, 5, confidence, slack_deg=0.0) == [1, 3, 5, 8, 10]
    confidence[[1, 3]] = 0.9  # confident nearest frames stay
    assert _photometric_track.pick_keyframes(usable, yaw, 5, confidence) == [1, 3, 5, 8, 10]
    confidence[[1, 3]] = 0.8  # equal confidence: the nearest; a hair more confident: that one
    assert _photometric_track.pick_keyframes(usable, yaw, 5, confidence) == [1, 3, 5, 8, 10]
    confidence[0] = 0.8 + 1e-7
    assert _photometric_track.pick_keyframes(usable, yaw, 5, confidence) == [0, 3, 5, 8, 10]
    still = np.linspace(-3.0, 3.0, 12)
    in_time = np.full(12, 0.8)
    in_time[5], in_time[6] = 0.1, 0.9  # the middle row is poor, its neighbour in time is not
    assert _photometric_track.pick_keyframes(usable, still, 3, in_time) == [0, 6, 11]


def test_frame_picture_crops_like_the_landmark_targets():
    from flamejax.perception._layout import FACE_OVAL

    image = np.zeros((120, 160, 3), np.uint8)
    image[40:80, 60:100] = 200  # a bright square, pixels 60..99 x 40..79
    points = np.tile(np.array([[150.0, 110.0]], np.float32), (478, 1))
    angles = np.linspace(0, 2 * np.pi, len(FACE_OVAL), endpoint=False)
    points[list(FACE_OVAL)] = np.stack([20 + 30 * np.cos(angles), 60 + 30 * np.sin(angles)], 1)  # past x = 0
    picture, mask = frame_picture(image, points, (-20.0, 30.0, 120.0), 60)  # half resolution, over the edge
    assert picture.shape == (60, 60, 3) and mask.shape == (60, 60) and picture.dtype == np.float32
    bright = np.argwhere(picture[..., 0] > 0.5)
    np.testing.assert_array_equal(bright.min(0), [5, 40])  # ((40 - 30) / 2, (60 + 20) / 2)
    np.testing.assert_array_equal(bright.max(0), [24, 59])
    assert mask[15, 20] == 1.0 and mask[15, 12] == 1.0  # inside the outline: frame (20, 60) and (4, 60)
    assert mask[:, :10].max() == 0.0  # the outline goes on left of the frame; the crop has no pixels there


@pytest.fixture(scope="module")
def rendered_clip(flame_model):
    """Eight frames of a smooth synthetic head, rendered with a known albedo and light."""
    seq = synthetic_sequence(flame_model, 8, np.random.default_rng(2), noise_px=0.5)
    uv = load_uv_layout()
    u = np.linspace(0, 1, SIZE)
    texture = jnp.asarray(np.stack(np.meshgrid(u, u), -1).mean(-1, keepdims=True) * [0.3, 0.2, 0.1]
                          + [0.6, 0.45, 0.35], jnp.float32)
    light = jnp.zeros((9, 3)).at[0].set(AMBIENT_SH * 0.9).at[3].set(0.4)
    render = jax.jit(jax.vmap(lambda p, c: render_mesh(flame_forward(flame_model, p).vertices, flame_model.faces, c,
                                                         uv, texture, light, RasterConfig(image_size=SIZE))))
    out = render(jax.tree.map(jnp.asarray, seq.params), jax.tree.map(jnp.asarray, seq.camera))
    pictures = [(np.asarray(out.image[i]), np.asarray(out.alpha[i])) for i in range(8)]
    targets = [jax.tree.map(lambda a, i=i: a[i], seq.targets) for i in range(8)]
    return seq, uv, targets, pictures


def test_keyframes_give_one_identity_and_texture_and_a_diverged_frame_keeps_its_landmark_fit(
        flame_model, rendered_clip, monkeypatch):
    seq, uv, targets, pictures = rendered_clip
    fit = track_landmarks(flame_model, targets, TINY)
    assert fit.photometric is None and fit.status == ["ok"] * 8
    broken = list(targets)
    broken[3] = dataclasses.replace(targets[3], lmk68=targets[3].lmk68 * 1e37)  # the stage's loss overflows
    fit = dataclasses.replace(fit, confidence=np.where(np.arange(8) == 3, 0.0, fit.confidence))  # nor a keyframe
    spy = _Spy(monkeypatch)
    served = []

    def serve(rows):
        served.append(list(rows))
        return ((row, *pictures[row]) for row in rows)

    refined = refine_photometric(flame_model, uv, fit, broken, serve, TINY_PHOTO)
    photo = refined.photometric
    assert refined.status == ["ok"] * 3 + ["photometric diverged"] + ["ok"] * 4
    assert "landmark-mode fit is kept" in STATUS_REASONS[refined.status[3]]
    assert photo.refined.tolist() == [True] * 3 + [False] + [True] * 4
    yaw = np.asarray(jax.vmap(yaw_pitch_roll)(fit.frames.cameras(jnp.asarray(fit.fov_deg))))[:, 0]
    keys = _photometric_track.pick_keyframes(np.ones(8, bool), yaw, 4, fit.confidence)
    assert photo.keyframes.tolist() == keys and served[0] == keys
    assert all(np.all(np.isfinite(getattr(refined.frames, name))) for name in ("expression", "jaw", "rotation"))
    # One joint keyframe stage: the clip's identity moved from the landmark tracking's, one albedo.
    [keyframe_result] = spy.keyframe_calls
    np.testing.assert_array_equal(photo.landmark_shape, fit.shape)
    np.testing.assert_array_equal(refined.shape, keyframe_result.shape)
    assert np.abs(refined.shape - fit.shape).max() > 1e-4
    np.testing.assert_allclose(photo.texture, keyframe_result.photometric.texture[0])
    # Then two refinement batches under that identity from the one clip appearance.
    assert len(spy.calls) == 2
    for appearance, result in spy.calls:
        assert appearance.light.ndim == 2
        ok = np.asarray(result.photometric.stage.finite)
        np.testing.assert_allclose(result.photometric.texture[ok], np.broadcast_to(photo.texture, (ok.sum(),) +
                                                                                    photo.texture.shape), atol=1e-6)
        np.testing.assert_array_equal(result.params.shape, np.broadcast_to(refined.shape, result.params.shape.shape))
    np.testing.assert_allclose(photo.light[3], spy.calls[0][0].light)  # the fallback frame: the clip's start light
    kept = photo.refined
    assert np.all(photo.photometric_final[kept] <= photo.photometric_start[kept] + 1e-6)
    assert np.nanmax(refined.nme[kept]) < 0.15


@pytest.fixture(scope="module")
def photometric_track(tmp_path_factory, flame_model):
    video = VIDEOS / "sadtalker_WDA_KatieHill_000.mp4"
    if not video.is_file():
        pytest.skip("no shared videos")
    out = tmp_path_factory.mktemp("phototrack")
    return video, track_video(video, out, TINY_PHOTO, flame_model, end_s=0.4, overlay=True)


def test_photometric_mode_writes_texture_light_and_errors(photometric_track):
    _, result = photometric_track
    out, n = result.out_dir, len(result.frame_indices)
    assert n == 10 and result.fit.status == ["ok"] * n and "photometric" in result.timings_s
    data = np.load(out / "tracking.npz")
    assert data["light_sh"].shape == (n, 9, 3) and data["photometric_refined"].all()
    assert np.all(data["photometric_error"] <= data["photometric_error_start"] + 1e-6)
    assert float(np.nanmax(data["nme"])) < 0.15 and data["landmark_mode_nme"].shape == (n,)
    assert data["confidence"].shape == (n,) and np.all((data["confidence"] > 0.0) & (data["confidence"] <= 1.0))
    assert data["landmark_mode_shape"].shape == data["shape"].shape
    summary = json.loads((out / "tracking.json").read_text())
    assert summary["mode"] == "photometric" and summary["texture_png"] == "texture.png"
    texture = cv2.imread(str(out / "texture.png"))
    assert texture.shape == (SIZE, SIZE, 3) and 30 < texture.mean() < 250  # a skin colour, not black or white
    overlay = cv2.VideoCapture(str(out / "overlay.mp4"))  # the textured head over the frames
    assert int(overlay.get(cv2.CAP_PROP_FRAME_COUNT)) == n


def test_photometric_resume_skips_done_batches(photometric_track, flame_model, monkeypatch):
    video, first = photometric_track
    spy = _Spy(monkeypatch)
    again = track_video(video, first.out_dir, TINY_PHOTO, flame_model, end_s=0.4, overlay=False, resume=True)
    assert spy.calls == [] and spy.keyframe_calls == []
    np.testing.assert_array_equal(again.fit.lmk68, first.fit.lmk68)
    checkpoints = first.out_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("photometric_*.npz")) == [
        "photometric_0000.npz", "photometric_0001.npz", "photometric_0002.npz", "photometric_appearance.npz"]
    (checkpoints / "photometric_0001.npz").unlink()
    redone = track_video(video, first.out_dir, TINY_PHOTO, flame_model, end_s=0.4, overlay=False, resume=True)
    assert len(spy.calls) == 1 and spy.keyframe_calls == []  # only the missing refinement batch
    np.testing.assert_allclose(redone.fit.lmk68, first.fit.lmk68, atol=1e-5)


def test_track_command_accepts_photometric_mode(tmp_path, capsys):
    from flamejax.cli import build_parser, main

    assert build_parser().parse_args(["track", "clip.mp4", "-o", str(tmp_path), "--mode", "photometric"]).mode == \
        "photometric"
    assert main(["track", str(tmp_path / "absent.mp4"), "-o", str(tmp_path), "--mode", "photometric"]) == 3
    err = capsys.readouterr().err
    assert "absent.mp4: no such video file" in err and "not available" not in err
