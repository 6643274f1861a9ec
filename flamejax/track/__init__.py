"""Video tracking and several photographs of one person: one identity, per-frame motion, fitted jointly.

``track_video(source, out_dir, TrackConfig())`` tracks a clip (conventions of every output in
:mod:`flamejax.track._video_track`); ``track_landmarks`` does the fitting part on per-frame targets;
``TrackConfig(photometric=PhotometricTrackConfig())`` refines the tracking against the pixels with one appearance
for the clip (``refine_photometric``); ``fit_same_person(model, targets)`` fits several photographs with one
shared identity, ``refine_same_person_photometric`` refines them against their pixels with one identity and one
albedo.
"""

from flamejax.perception._video import (FOLDER_FPS, Frame, FrameSource, VideoInfo, VideoLandmarker,
                                        VideoReadError)
from flamejax.track._joint import (SAME_PERSON, FrameStates, JointConfig, JointResult, SamePersonResult, fit_joint,
                                   fit_same_person, with_identity)
from flamejax.track._photometric_track import (PhotometricTrack, PhotometricTrackConfig, frame_picture,
                                               refine_photometric)
from flamejax.track._photos import fit_same_person_photos, photo_targets, refine_same_person_photometric
from flamejax.track._sequence import (STATUS_REASONS, NoUsableFramesError, SequenceFit, TrackConfig, chunk_starts,
                                      fill_from_neighbours, precise_track_config, track_landmarks)
from flamejax.track._smooth import TemporalPrior, smooth_states, smooth_trajectory, temporal_loss
from flamejax.track._synthetic import SyntheticViews, synthetic_sequence, synthetic_views
from flamejax.track._video_track import EXPORTS, NoFaceInVideoError, TrackResult, cameras_opencv, track_video

__all__ = [
    "EXPORTS", "FOLDER_FPS", "Frame", "FrameSource", "FrameStates", "JointConfig", "JointResult",
    "NoFaceInVideoError", "NoUsableFramesError", "SAME_PERSON", "STATUS_REASONS", "SamePersonResult", "SequenceFit",
    "SyntheticViews", "TemporalPrior", "TrackConfig", "TrackResult", "VideoInfo", "VideoLandmarker",
    "VideoReadError", "cameras_opencv", "chunk_starts", "fill_from_neighbours", "fit_joint",
    "fit_same_person", "fit_same_person_photos", "photo_targets", "precise_track_config",
    "refine_same_person_photometric", "smooth_states", "smooth_trajectory", "synthetic_sequence", "synthetic_views",
    "temporal_loss",
    "track_landmarks", "track_video", "with_identity",
    "PhotometricTrack", "PhotometricTrackConfig", "frame_picture", "refine_photometric",
]
