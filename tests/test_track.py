"""Video tracking and the same-person fit: tiny synthetic clips, tiny configs, the 20/10 test model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import jax
import numpy as np
import pytest

from flamejax.fit import LandmarkStageConfig, aligned_vertex_error_mm, nme_inner, quick_config, stack_targets
from flamejax.track import (FrameSource, JointConfig, TemporalPrior, TrackConfig, VideoReadError,
                            chunk_starts, fill_from_neighbours, fit_same_person, precise_track_config, smooth_states,
                            smooth_trajectory, synthetic_sequence, synthetic_views, temporal_loss, track_landmarks,
                            track_video)
from flamejax.track._joint import FrameStates, project_frames
from flamejax.track._sequence import STATUS_LOST, STATUS_OK, _blend_weights
from tests.conftest import folded_look
from tests.test_fit_units import silhouette_to, turned_face

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "videos"
TINY = TrackConfig(chunk_frames=8, chunk_overlap=2, identity_frames=8, init=quick_config(10, 0),
                   identity=JointConfig(LandmarkStageConfig(steps=16)),
                   motion=JointConfig(LandmarkStageConfig(steps=16, fit_shape=False)))


def _write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def _noise_frames(count: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(count)]


# --------------------------------------------------------------------------------------------- pure helpers


def test_chunks_cover_every_frame_and_blend_to_one():
    for frames in (5, 8, 9, 20, 31):
        starts = chunk_starts(frames, 8, 2)
        total = np.zeros(frames)
        for s in starts:
            w = _blend_weights(s, 8, 2, frames, starts)
            total[s:s + len(w)] += w
        assert starts[0] == 0 and all(b - a <= 6 for a, b in zip(starts, starts[1:]))
        np.testing.assert_allclose(total, 1.0, atol=1e-12)


def test_fill_from_neighbours_interpolates_gaps_and_holds_ends():
    values = np.array([[0.0], [9.0], [2.0], [9.0], [4.0], [9.0]])
    usable = np.array([True, False, True, False, True, False])
    filled = fill_from_neighbours(values, usable)
    np.testing.assert_allclose(filled[:, 0], [0, 1, 2, 3, 4, 4])


def test_temporal_loss_penalises_acceleration_not_constant_velocity():
    frames = 6
    z = lambda d: np.zeros((frames, d), np.float32)  # noqa: E731
    still = FrameStates(z(4), z(3), z(6), z(3), z(3))
    ramp = FrameStates(np.linspace(0, 1, frames)[:, None].repeat(4, 1).astype(np.float32), z(3), z(6), z(3), z(3))
    kink = FrameStates(np.abs(np.linspace(-1, 1, frames))[:, None].repeat(4, 1).astype(np.float32), z(3), z(6), z(3),
                       z(3))
    prior = TemporalPrior()
    assert float(temporal_loss(still, prior)) == 0.0
    step_only = 5 * 4 * (0.2 / prior.expression_step) ** 2
    assert float(temporal_loss(ramp, prior)) == pytest.approx(step_only, rel=1e-4)
    assert float(temporal_loss(kink, prior)) > 10 * step_only


def test_smoothing_minimises_the_temporal_objective_and_fills_gaps():
    rng = np.random.default_rng(0)
    frames = 40
    t = np.arange(frames)
    truth = np.sin(t / 6.0)[:, None] * np.array([[1.0, -0.5]])
    noisy = truth + rng.normal(size=truth.shape) * 0.1
    weight = np.ones(frames)
    weight[15:20] = 0.0
    noisy[15:20] = 50.0  # junk where there is no data: must not leak into the answer
    noise, step, accel = 0.1, 1.0, 0.02
    smooth = smooth_trajectory(noisy, weight, noise, step, accel)

    def objective(y):
        return (np.sum(weight[:, None] * ((y - noisy) / noise) ** 2) + np.sum((np.diff(y, axis=0) / step) ** 2)
                + np.sum((np.diff(y, 2, axis=0) / accel) ** 2))

    for _ in range(5):  # the least-squares minimum: any perturbation costs more
        assert objective(smooth) < objective(smooth + rng.normal(size=smooth.shape) * 1e-3)
    ok = weight > 0
    assert np.abs(smooth - truth)[ok].mean() < 0.6 * np.abs(noisy - truth)[ok].mean()
    assert np.abs(smooth - truth)[~ok].max() < 0.15
    assert np.array_equal(smooth_trajectory(noisy, np.zeros(frames), noise, step, accel).round(6), noisy.round(6))


def test_smooth_states_uses_each_groups_tolerances():
    rng = np.random.default_rng(1)
    frames = 12
    states = FrameStates(*(rng.normal(size=(frames, d)).astype(np.float32) * 0.01 for d in (4, 3, 6, 3, 3)))
    loose = TemporalPrior(expression_noise=1e-6)
    smoothed = smooth_states(states, np.ones(frames), loose)
    np.testing.assert_allclose(smoothed.expression, states.expression, atol=1e-6)
    assert np.abs(np.diff(smoothed.rotation, 2, axis=0)).mean() < 0.5 * np.abs(np.diff(states.rotation, 2, axis=0)).mean()
    assert smoothed.translation.dtype == np.float32


def test_precise_track_config_lets_the_jaw_contour_shape_the_clip_identity():
    base = TrackConfig(chunk_frames=20, photometric=None)
    precise = precise_track_config(base)
    assert base.identity.stage.contour_identity == 0.0 and precise.identity.stage.contour_identity == 1.0
    unchanged = dataclasses.replace(precise.identity.stage, contour_identity=0.0)
    assert unchanged == base.identity.stage and precise.replace(identity=base.identity) == base


def test_prefetched_frames_keep_their_order_and_raise_where_decoding_failed():
    from flamejax.track._video_track import _prefetched

    def broken():
        yield from range(5)
        raise VideoReadError("clip.mp4: truncated at frame 5")

    assert list(_prefetched(iter(range(20)), depth=3)) == list(range(20))
    seen = []
    with pytest.raises(VideoReadError, match="truncated at frame 5"):
        for item in _prefetched(broken(), depth=2):
            seen.append(item)
    assert seen == list(range(5))
    first = next(_prefetched(iter(range(100)), depth=2))  # abandoned early: the producer must not hang
    assert first == 0


# --------------------------------------------------------------------------------------------- fitting


def test_same_person_shares_one_identity_better_than_the_mean_head(flame_model):
    # Eight views and TINY's settings: the same compiled programs as the tracker's identity step below.
    views = synthetic_views(flame_model, np.linspace(-40, 40, 8), np.random.default_rng(3), noise_px=0.5)
    result = fit_same_person(flame_model, views.targets, TINY.identity, init_config=TINY.init)
    assert result.status == ["ok"] * 8
    assert result.params.shape.shape == (8, flame_model.num_shape)
    np.testing.assert_array_equal(result.params.shape[0], result.params.shape[7])
    assert np.all(result.nme < 0.08)
    from flamejax.flame import FlameParams, flame_forward

    def neutral(shape):
        p = FlameParams.for_model(flame_model)
        return np.asarray(flame_forward(flame_model, dataclasses.replace(p, shape=shape)).vertices)

    truth = neutral(views.shape)
    fitted = aligned_vertex_error_mm(neutral(result.shape), truth).mean()
    mean_head = aligned_vertex_error_mm(neutral(np.zeros_like(views.shape)), truth).mean()
    assert fitted < 0.95 * mean_head  # 16 steps only: the accuracy is measured in benchmarks/bench_track.py


def test_same_person_photos_gives_one_shape_for_several_photographs(flame_model):
    from flamejax.perception import PreprocessConfig
    from flamejax.track import fit_same_person_photos

    images = VIDEOS.parent / "images"
    photos = sorted(images.glob("ffhq_*.png")) + [images / "parsing_6.jpg"]
    if len(photos) != 8 or not all(p.is_file() for p in photos):
        pytest.skip("no shared images")
    result, prepared = fit_same_person_photos(flame_model, photos, TINY.identity,
                                              PreprocessConfig(use_parsing=False), init_config=TINY.init)
    assert len(prepared) == 8 and result.status.count("ok") >= 7
    assert np.median(result.nme) < 0.1
    np.testing.assert_array_equal(result.params.shape[0], result.params.shape[1])
    with pytest.raises(ValueError, match="at least two photographs"):
        fit_same_person_photos(flame_model, photos[:1])


def test_same_person_photos_lean_to_the_look_the_joint_fit_explains(flame_model, monkeypatch):
    """A photograph whose two looks disagree throughout is fitted again, leaning to one look; the others keep
    their targets."""
    import dataclasses

    import flamejax.track._photos as photos_module
    from flamejax.fit import LOOK_DISAGREEMENT, look_disagreement
    from flamejax.perception import PreprocessConfig, preprocess
    from flamejax.track import fit_same_person_photos

    image = VIDEOS.parent / "images" / "ffhq_00000.png"
    if not image.is_file():
        pytest.skip("no shared images")
    photo = preprocess(image, PreprocessConfig(use_parsing=False))
    folded = dataclasses.replace(photo, mirrored478=folded_look(photo.points478, 0.8))
    assert look_disagreement(folded.points478, folded.mirrored478) > LOOK_DISAGREEMENT
    monkeypatch.setattr(photos_module, "preprocess", lambda path, config: {"a": photo, "b": folded}[path])
    calls = []
    real_fit = photos_module.fit_same_person

    def counting_fit(model, targets, *args, **kwargs):
        calls.append(np.asarray(targets.mediapipe))
        return real_fit(model, targets, *args, **kwargs)

    monkeypatch.setattr(photos_module, "fit_same_person", counting_fit)
    result, _ = fit_same_person_photos(flame_model, ["a", "b"], TINY.identity, init_config=TINY.init)
    assert len(calls) == 2
    np.testing.assert_array_equal(calls[1][0], calls[0][0])
    assert np.abs(calls[1][1] - calls[0][1]).max() > 0.01
    assert np.all(np.isfinite(result.params.shape))


@pytest.fixture(scope="module")
def synthetic_clip(flame_model):
    seq = synthetic_sequence(flame_model, 14, np.random.default_rng(1), noise_px=0.5)
    targets = [jax.tree.map(lambda a, i=i: a[i], seq.targets) for i in range(14)]
    return seq, targets


def test_track_landmarks_fills_lost_frames_and_resumes(flame_model, synthetic_clip, tmp_path):
    seq, targets = synthetic_clip
    lost = [5, 6]
    holed = [None if i in lost else t for i, t in enumerate(targets)]
    fit = track_landmarks(flame_model, holed, TINY, checkpoint_dir=tmp_path)
    assert [fit.status[i] for i in lost] == [STATUS_LOST] * 2
    assert fit.status.count(STATUS_OK) == 12
    assert np.all(np.isfinite(fit.lmk68)) and np.isnan(fit.nme[5]) and np.nanmax(fit.nme) < 0.15
    kept = [i for i in range(14) if i not in lost]
    # Each frame's confidence as a photograph's fit has it; none where the frame had no face.
    assert np.isnan(fit.confidence[lost]).all() and np.all(fit.confidence[kept] > 0.5), fit.confidence
    frames = jax.tree.map(lambda a: a[:2], fit.frames)
    mine = stack_targets([holed[0], holed[1]])
    moved = stack_targets([holed[0], dataclasses.replace(holed[1], lmk68=holed[1].lmk68.at[48:].add(0.1))])
    points, sure = map(np.asarray, project_frames(flame_model, frames, fit.shape, fit.fov_deg, mine))
    np.testing.assert_allclose(sure, fit.confidence[:2], rtol=1e-4)
    np.testing.assert_allclose(points, fit.lmk68[:2], atol=1e-6)  # another batch size: another compiled program
    unsure = np.asarray(project_frames(flame_model, frames, fit.shape, fit.fov_deg, moved)[1])
    assert unsure[0] == pytest.approx(sure[0], rel=1e-5) and unsure[1] < 0.5 * sure[1]
    np.testing.assert_allclose(fit.nme[kept], [float(nme_inner(fit.lmk68[i], holed[i].lmk68)) for i in kept],
                               rtol=1e-4)
    truth = np.asarray(seq.targets.lmk68)
    eye = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=-1)
    gap_error = np.linalg.norm(fit.lmk68[lost] - truth[lost], axis=-1).mean(-1) / eye[lost]
    assert np.all(gap_error < 0.2), gap_error
    again = track_landmarks(flame_model, holed, TINY, checkpoint_dir=tmp_path)
    np.testing.assert_array_equal(again.lmk68, fit.lmk68)
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["chunk_0000.npz", "chunk_0001.npz", "identity.npz",
                                                            "init.npz"]


def test_track_landmarks_with_no_face_anywhere_says_so(flame_model):
    from flamejax.track import NoUsableFramesError

    with pytest.raises(NoUsableFramesError, match="no frame of the clip has a usable face"):
        track_landmarks(flame_model, [None] * 3, TINY)


# --------------------------------------------------------------------------------------------- decoding


def test_frame_source_reads_a_video_with_times(tmp_path):
    path = _write_video(tmp_path / "clip.mp4", _noise_frames(6), fps=10.0)
    source = FrameSource(path)
    frames = list(source)
    assert [f.index for f in frames] == list(range(6))
    assert source.info.fps == pytest.approx(10.0) and (source.info.height, source.info.width) == (48, 64)
    np.testing.assert_allclose([f.time_s for f in frames], np.arange(6) / 10.0, atol=1e-3)
    assert [f.index for f in FrameSource(path, start_s=0.2, end_s=0.5)] == [2, 3, 4]
    assert [f.index for f in FrameSource(path, fps=5.0)] == [0, 2, 4]


def test_frame_source_turns_rotated_frames_upright(tmp_path, monkeypatch):
    path = _write_video(tmp_path / "phone.mp4", _noise_frames(2), fps=10.0)
    plain = list(FrameSource(path))
    original_open = FrameSource._open
    monkeypatch.setattr(FrameSource, "_open", lambda self: (original_open(self)[0], 90))
    rotated_source = FrameSource(path)
    rotated = list(rotated_source)
    assert (rotated_source.info.height, rotated_source.info.width) == (64, 48)
    np.testing.assert_array_equal(rotated[0].image, np.rot90(plain[0].image, k=-1))
    assert any("rotation metadata 90" in note for note in rotated_source.notes)


def test_bad_videos_give_one_line_messages(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoReadError, match="garbage.mp4") as error:
        FrameSource(garbage)
    assert "\n" not in str(error.value)
    with pytest.raises(VideoReadError, match="no such video file"):
        FrameSource(tmp_path / "absent.mp4")
    full = _write_video(tmp_path / "full.mp4", _noise_frames(30), fps=10.0).read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(full[: len(full) * 2 // 3])
    try:
        source = FrameSource(truncated)
    except VideoReadError as error:  # the index of an MP4 sits at its end: a cut file may not open at all
        assert "truncated.mp4" in str(error) and "\n" not in str(error)
    else:
        frames = list(source)
        assert len(frames) < 30 and any("truncated" in note for note in source.notes)


def test_frame_folder_with_gaps(tmp_path):
    for index, image in zip((1, 2, 5, 6), _noise_frames(4)):
        cv2.imwrite(str(tmp_path / f"frame_{index:04d}.png"), image)
    source = FrameSource(tmp_path)
    frames = list(source)
    assert [f.index for f in frames] == [1, 2, 5, 6]
    from flamejax.track._video_track import _with_gaps

    indices, times, points, profiles, missing = _with_gaps([f.index for f in frames], [f.time_s for f in frames],
                                                           [np.zeros((478, 2))] * 4, [None] * 4, source.info.fps)
    assert indices == [1, 2, 3, 4, 5, 6] and missing.tolist() == [False, False, True, True, False, False]
    assert points[2] is None and times[3] == pytest.approx(4 / source.info.fps)
    (tmp_path / "cover.png").write_bytes((tmp_path / "frame_0001.png").read_bytes())
    with pytest.raises(VideoReadError, match="cover.png"):
        FrameSource(tmp_path)


def test_a_turned_frame_s_second_looks_come_back_in_frame_pixels(monkeypatch):
    """The crop around a turned face reaches the segmentation and the mirrored FaceMesh, and what they find comes
    back in frame pixels; a face turned less gets neither."""
    import flamejax.perception._mask as mask_module
    from flamejax.track import _video_track

    crops = []

    def by_brightness(crop, size):  # the frame's person is its bright part
        crops.append(crop)
        return cv2.resize((crop[..., 0] > 127).astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)

    def mirrored_a_pixel_lower(crop, expected):  # what the mirrored look would return: a point 1 crop pixel down
        crops.append(crop)
        return dataclasses.replace(expected, points=expected.points + np.float32([0.0, 1.0]))

    monkeypatch.setattr(mask_module, "person_silhouette", by_brightness)
    monkeypatch.setattr(_video_track, "redetect_mirrored", mirrored_a_pixel_lower)
    scale, offset = 2.0, np.array([300.0, 200.0], np.float32)
    frame = cv2.resize((silhouette_to(180) * 255).astype(np.uint8), None, fx=scale, fy=scale,
                       interpolation=cv2.INTER_NEAREST)
    frame = np.pad(frame, ((200, 88), (300, 188)))[..., None].repeat(3, axis=-1)
    points = turned_face(1.8) * scale + offset
    look = _video_track.turned_look(frame, points)
    assert len(crops) == 2 and crops[0].shape == (_video_track.TURNED_CROP, _video_track.TURNED_CROP, 3)
    np.testing.assert_array_equal(look.profile_weight, 1.0)
    np.testing.assert_allclose(look.profile[:, 0], 180 * scale + offset[0], atol=2 * scale)
    crop_pixel = float(np.max(points.max(0) - points.min(0))) * 2 / _video_track.TURNED_CROP
    np.testing.assert_allclose(look.mirrored478 - points, np.broadcast_to([0.0, crop_pixel], points.shape), atol=1e-3)
    targets = _video_track._targets(points, (offset[0], offset[1], 256 * scale), look)
    np.testing.assert_allclose(targets.profile[:, 0], 180 * 2 / 256 - 1, atol=4 / 256)
    frontal = _video_track.turned_look(frame, turned_face(0.0) * scale + offset)
    assert len(crops) == 2 and not frontal.profile_weight.any() and frontal.mirrored478 is None
    # A segmentation that takes the whole crop for the person is done again on a crop twice as wide, as in
    # preprocessing: the profile is still found where the frame's person ends.
    segmented = []

    def whole_crop_first(crop, size):
        segmented.append(size)
        return np.ones((size, size), np.float32) if len(segmented) == 1 else by_brightness(crop, size)

    monkeypatch.setattr(mask_module, "person_silhouette", whole_crop_first)
    widened = _video_track.turned_look(frame, points, mirror=False)
    assert segmented == [_video_track.TURNED_CROP, 2 * _video_track.TURNED_CROP]
    np.testing.assert_array_equal(widened.profile_weight, 1.0)
    np.testing.assert_allclose(widened.profile[:, 0], 180 * scale + offset[0], atol=2 * scale)


def test_turned_looks_are_checkpointed_with_the_landmarks(tmp_path, monkeypatch):
    from flamejax.track import _video_track

    class TurnedFaces:  # a landmarker that sees the same turned face in every frame
        jumps = found_again = quarter_turns = 0

        def __init__(self, max_side, face_index=None):
            pass

        def __call__(self, image):
            return turned_face(1.8)

        def follow(self, points):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    looked = []
    real_look = _video_track.turned_look

    def counted(image, points, profile, mirror):
        looked.append(mirror)
        return dataclasses.replace(real_look(image, points, profile=False, mirror=False),
                                   profile_weight=np.ones(24, np.float32),
                                   mirrored478=points + 1.0 if mirror else None)

    monkeypatch.setattr(_video_track, "VideoLandmarker", TurnedFaces)
    monkeypatch.setattr(_video_track, "turned_look", counted)
    for index, image in enumerate(_noise_frames(3)):
        cv2.imwrite(str(tmp_path / f"frame_{index:04d}.png"), image)
    checkpoint = tmp_path / "landmarks.npz"
    detect = lambda **switches: _video_track.detect_sequence(FrameSource(tmp_path), 1280, checkpoint,  # noqa: E731
                                                              lambda message: None, **switches)
    first = detect()[3]
    again = detect()[3]
    assert looked == [True] * 3  # the second run took every look from the checkpoint
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.mirrored478, b.mirrored478)
        np.testing.assert_array_equal(a.profile_weight, b.profile_weight)
    assert all(look.mirrored478 is None and look.profile_weight.any() for look in detect(mirror=False)[3])
    assert all(not look.profile_weight.any() for look in detect(profile=False)[3])
    assert detect(profile=False, mirror=False)[3] == [None] * 3
    turned, frontal = detect()[3], detect(profile=False)[3]
    assert _video_track.clip_looks(turned) is turned  # a clip with profile points keeps every frame's term
    assert all(t.profile is not None for t in (_video_track._targets(turned_face(1.8), (0, 0, 256), look)
                                               for look in turned))
    unprofiled = _video_track.clip_looks(frontal + [None])
    assert unprofiled[-1] is None and all(look.profile_weight is None for look in unprofiled[:-1])
    target = _video_track._targets(turned_face(1.8), (0, 0, 256), unprofiled[0])
    assert target.profile is None and target.profile_weight is None and target.mediapipe_weight.min() < 1


def test_video_without_a_face(tmp_path, flame_model):
    from flamejax.track import NoFaceInVideoError

    path = _write_video(tmp_path / "empty.mp4", _noise_frames(3), fps=10.0)
    with pytest.raises(NoFaceInVideoError, match="no face found in any of the 3 frames"):
        track_video(path, tmp_path / "out", TINY, flame_model, overlay=False)


def test_the_landmarker_keeps_to_the_clip_s_face_when_the_tracking_takes_up_another():
    """Two people side by side, the first covered for a few frames: MediaPipe's tracking, having lost them, takes up
    the other person; the clip's face is looked for among all faces, and is None while covered."""
    from flamejax.perception import FaceIndexError
    from flamejax.perception._video import VideoLandmarker

    clips = [VIDEOS / "liveportrait_d18.mp4", VIDEOS / "liveportrait_d3.mp4"]
    if not all(clip.is_file() for clip in clips):
        pytest.skip("no shared videos")
    frames = [[cv2.resize(frame.image, (240, 240), interpolation=cv2.INTER_AREA) for frame in FrameSource(clip)][:14]
              for clip in clips]
    pictures = [np.concatenate([left * (not 4 <= i < 8), right], axis=1)
                for i, (left, right) in enumerate(zip(*frames))]
    with VideoLandmarker() as landmarker:
        found = [landmarker(picture) for picture in pictures]
        jumps, found_again = landmarker.jumps, landmarker.found_again
    assert all(found[i] is None for i in range(4, 8))
    centres = np.array([points.mean(axis=0)[0] for i, points in enumerate(found) if not 4 <= i < 8])
    assert np.all(centres < 240), centres  # the first person's, on the left
    assert jumps >= found_again > 0  # the tracking went to the right, and was caught
    with VideoLandmarker(face_index=1) as landmarker:  # the second from the left, whom the tracking does not take
        assert all(landmarker(picture).mean(axis=0)[0] > 240 for picture in pictures)
    with VideoLandmarker(face_index=2) as landmarker, pytest.raises(FaceIndexError, match="shows 2"):
        landmarker(pictures[0])


def test_the_landmarker_finds_an_upside_down_clip_s_face_as_it_is():
    """A clip upside down with no rotation metadata: MediaPipe alone lays an upright mesh over every frame (more
    than an eye-corner distance off); the landmarker turns the frames upright and maps the points back."""
    from flamejax.perception import to_68, transform_points
    from flamejax.perception._landmarks import _turned
    from flamejax.perception._video import VideoLandmarker

    clip = VIDEOS / "liveportrait_d18.mp4"
    if not clip.is_file():
        pytest.skip("no shared videos")
    frames = [frame.image for frame in FrameSource(clip)][:6]
    with VideoLandmarker() as landmarker:
        upright = [landmarker(frame) for frame in frames]
    with VideoLandmarker() as landmarker:
        for frame, points in zip(frames, upright):
            turned, to_turned = _turned(frame, 2)
            error = np.linalg.norm(landmarker(turned) - transform_points(to_turned, points), axis=1).mean()
            assert error < 0.05 * np.linalg.norm(np.subtract(*to_68(points)[[45, 36]]))
        assert landmarker.quarter_turns == 2


# --------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def real_track(tmp_path_factory, flame_model):
    video = VIDEOS / "sadtalker_WDA_KatieHill_000.mp4"
    if not video.is_file():
        pytest.skip("no shared videos")
    out = tmp_path_factory.mktemp("track")
    return track_video(video, out, TINY, flame_model, end_s=0.4, overlay=True, exports=("vhap", "fht", "obj-sequence"))


def test_track_video_writes_parameters_cameras_and_exports(real_track):
    out = real_track.out_dir
    n = len(real_track.frame_indices)
    assert n == 10 and real_track.fit.status.count("ok") == n
    data = np.load(out / "tracking.npz")
    assert data["R"].shape == (n, 3, 3) and data["K"].shape == (n, 3, 3) and data["expression"].shape == (n, 10)
    np.testing.assert_allclose(np.linalg.det(data["R"]), 1.0, atol=1e-4)
    assert float(np.nanmax(data["nme"])) < 0.15
    assert data["confidence"].shape == (n,) and np.all((data["confidence"] > 0.0) & (data["confidence"] <= 1.0))
    summary = json.loads((out / "tracking.json").read_text())
    assert summary["status"] == ["ok"] * n and len(summary["status_reason"]) == n
    transforms = json.loads((out / "export" / "vhap" / "transforms.json").read_text())
    assert len(transforms["frames"]) == n and {"fl_x", "fl_y", "cx", "cy", "w", "h"} <= set(transforms)
    param = np.load(out / "export" / "vhap" / transforms["frames"][0]["flame_param_path"])
    assert {"translation", "rotation", "neck_pose", "jaw_pose", "eyes_pose", "shape", "expr"} <= set(param.files)
    assert param["eyes_pose"].shape == (1, 6)
    assert len(list((out / "export" / "fht").glob("*.npz"))) == n
    assert len(list((out / "export" / "meshes").glob("*.obj"))) == n
    overlay = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(overlay.get(cv2.CAP_PROP_FRAME_COUNT)) == n


def test_opencv_camera_projects_the_head_onto_the_fitted_landmarks(real_track, flame_model):
    from flamejax.flame import landmark_points

    data = np.load(real_track.out_dir / "tracking.npz")
    fit = real_track.fit
    params = jax.tree.map(lambda a: np.asarray(a)[0], fit.frames.flame_params(np.asarray(fit.shape)))
    nose_tip = np.asarray(landmark_points(flame_model, params).inner)[30 - 17]
    x_cam = data["R"][0] @ nose_tip + data["t"][0]
    assert x_cam[2] > 0
    uv = (data["K"][0] @ x_cam)[:2] / x_cam[2] + 0.5  # K: pixel centres at integers; landmarks at half-integers
    np.testing.assert_allclose(uv, data["landmarks_fitted"][0, 30], atol=0.5)


def test_track_command_options_and_messages(tmp_path, capsys):
    from flamejax.cli import build_parser, main

    args = build_parser().parse_args(["track", "clip.mp4", "-o", str(tmp_path), "--no-overlay", "--export",
                                      "vhap,fht", "--start", "1", "--end", "2", "--fps", "15"])
    assert args.overlay is False and args.export == ("vhap", "fht") and args.fps == 15.0
    assert args.no_silhouette is False
    assert build_parser().parse_args(["track", "clip.mp4", "-o", "x", "--no-silhouette"]).no_silhouette
    assert main(["track", "clip.mp4", "-o", "x", "--export", "gltf"]) == 2
    assert "unknown export 'gltf'" in capsys.readouterr().err
    assert main(["track", "clip.mp4", "-o", "x", "--fps", "-3"]) == 2
    assert main(["track", str(tmp_path / "absent.mp4"), "-o", str(tmp_path)]) == 3
    assert "absent.mp4: no such video file" in capsys.readouterr().err
    assert main(["track", "clip.mp4", "-o", str(tmp_path), "--start", "3", "--end", "2"]) == 2
