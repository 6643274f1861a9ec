"""Fitting FLAME to images: configuration, landmark targets, the two optax stages, synthetic problems."""

from flamejax.fit._config import FitConfig, GroupSchedule, InitConfig, LandmarkStageConfig, RigidStageConfig, quick_config
from flamejax.fit._landmark_fit import (
    STATUS_NAMES,
    STATUS_OK,
    FitResult,
    InitialGuess,
    LandmarkPoints3D,
    ProjectedLandmarks,
    fit_landmarks,
    fit_landmarks_batch,
    landmark_model,
    landmark_points,
    linear_initialisation,
    project_landmarks,
    result_to_numpy,
)
from flamejax.fit._photometric import (
    AMBIENT_SH,
    PhotometricConfig,
    PhotometricResult,
    PhotometricTargets,
    fit_photometric,
    fit_photometric_batch,
)
from flamejax.fit._optim import StageOutcome, grouped_adam, run_optimiser
from flamejax.fit._synthetic import SyntheticSample, aligned_vertex_error_mm, rotation_error_deg, sample_problem, similarity_align
from flamejax.fit._targets import LandmarkTargets, nme_inner, stack_targets

__all__ = [
    "AMBIENT_SH", "PhotometricConfig", "PhotometricResult", "PhotometricTargets", "fit_photometric",
    "fit_photometric_batch", "FitConfig", "FitResult", "GroupSchedule", "InitConfig", "InitialGuess", "LandmarkPoints3D", "LandmarkStageConfig",
    "LandmarkTargets", "ProjectedLandmarks", "RigidStageConfig", "STATUS_NAMES", "STATUS_OK", "StageOutcome",
    "SyntheticSample", "aligned_vertex_error_mm", "fit_landmarks", "fit_landmarks_batch", "grouped_adam",
    "landmark_model", "landmark_points", "linear_initialisation", "nme_inner", "project_landmarks",
    "quick_config", "result_to_numpy", "rotation_error_deg", "run_optimiser", "sample_problem",
    "similarity_align", "stack_targets",
]
