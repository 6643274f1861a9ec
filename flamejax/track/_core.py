"""Every name the tracker takes from the rest of flamejax, in one place (repoint here after a refactor)."""

from flamejax.camera import Camera, intrinsics, project_ndc, yaw_pitch_roll
from flamejax.fit import (PROFILE_SAMPLES, Appearance, FitConfig, FitResult, GroupSchedule, LandmarkStageConfig,
                          LandmarkTargets, PhotometricConfig, PhotometricTargets, SharedPhotometricResult, StageReport,
                          fit_landmarks_batch, fit_photometric_batch, fit_photometric_same_person,
                          WeightingConfig, landmark_model, nme_inner, profile_edge, profile_turn_weight,
                          quick_config, stack_targets, start_appearance, two_look_targets)
from flamejax.fit._landmark_fit import contour_identity_share, identity_scaled_landmark_loss, reads_face
from flamejax.fit._visibility import weighed_landmarks
from flamejax.fit._optim import FROZEN, partitioned_adam, run_stage
from flamejax.flame import FlameModel, FlameParams, flame_forward, load_flame, posed_landmarks
from flamejax.io import atomic_path, export_mesh, write_image, write_json, write_npz
from flamejax.perception import (FaceLandmarks, landmark_face_mask, person_in_context, redetect_mirrored, to_68,
                                 warp_image)
from flamejax.perception._landmarks import points_box
from flamejax.perception._transform import inside_source
from flamejax.render import RasterConfig, render_mesh, shade_for_display

__all__ = [
    "Camera", "FitConfig", "GroupSchedule", "RasterConfig", "export_mesh", "shade_for_display", "to_68", "FlameModel",
    "FlameParams", "LandmarkStageConfig", "LandmarkTargets", "atomic_path", "reads_face",
    "contour_identity_share", "identity_scaled_landmark_loss",
    "fit_landmarks_batch", "flame_forward", "FROZEN", "partitioned_adam", "intrinsics",
    "landmark_model", "load_flame", "nme_inner", "posed_landmarks", "project_ndc", "quick_config", "run_stage",
    "stack_targets", "write_image", "write_json", "write_npz", "yaw_pitch_roll",
    "Appearance", "FitResult", "PhotometricConfig", "PhotometricTargets", "StageReport",
    "fit_photometric_batch", "landmark_face_mask", "render_mesh", "start_appearance",
    "SharedPhotometricResult", "fit_photometric_same_person",
    "PROFILE_SAMPLES", "WeightingConfig", "weighed_landmarks", "person_in_context", "profile_edge",
    "profile_turn_weight", "two_look_targets",
    "FaceLandmarks", "redetect_mirrored", "points_box", "warp_image", "inside_source",
]
