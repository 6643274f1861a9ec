"""Fitting FLAME to images: configuration, targets, the landmark and photometric fits, their results.

The data path: :class:`LandmarkTargets` (per image, :func:`stack_targets` for a batch) and optionally a
:class:`FitStart` → :func:`fit_landmarks_batch` (linear initialisation, stage 1 rigid, stage 2 landmarks) →
optionally :func:`fit_photometric_batch` → :class:`FitResult` with a :class:`Status` per image.
"""

from flamejax.fit._config import (FitConfig, GroupSchedule, InitConfig, LandmarkStageConfig, RigidStageConfig,
                                  WeightingConfig, precise_landmarks_config, quick_config)
from flamejax.fit._init import linear_initialisation
from flamejax.fit._landmark_fit import fit_landmarks, fit_landmarks_batch, landmark_data_loss, landmark_model
from flamejax.fit._photometric import (AMBIENT_SH, Appearance, PhotometricConfig, PhotometricTargets,
                                       fit_photometric, fit_photometric_batch, precise_photometric_config,
                                       start_appearance)
from flamejax.fit._photometric_shared import SharedPhotometricResult, fit_photometric_same_person
from flamejax.fit._result import FitResult, FitStart, PhotometricReport, StageReport, Status
from flamejax.fit._synthetic import SyntheticSample, aligned_vertex_error_mm, observed_targets, rotation_error_deg, sample_problem
from flamejax.fit._targets import (PROFILE_SAMPLES, PROFILE_TURN, LandmarkTargets, nme_inner, profile_edge,
                                   profile_turn_weight, silhouette_distance, stack_targets)
from flamejax.fit._visibility import (LOOK_DISAGREEMENT, LandmarkConventions, LandmarkWeights, landmark_conventions,
                                      leaning_look_targets, look_disagreement, target_agreement,
                                      two_look_targets)

__all__ = [
    "AMBIENT_SH", "Appearance", "FitConfig", "FitResult", "FitStart", "GroupSchedule", "InitConfig", "LandmarkConventions",
    "LandmarkStageConfig", "LandmarkTargets", "LandmarkWeights", "PhotometricConfig", "PhotometricReport",
    "PhotometricTargets", "RigidStageConfig", "StageReport", "Status", "SyntheticSample", "WeightingConfig",
    "SharedPhotometricResult", "aligned_vertex_error_mm", "fit_landmarks", "fit_landmarks_batch", "fit_photometric",
    "fit_photometric_batch", "fit_photometric_same_person",
    "landmark_conventions", "landmark_data_loss", "leaning_look_targets", "look_disagreement", "LOOK_DISAGREEMENT",
    "target_agreement",
    "landmark_model", "linear_initialisation", "nme_inner",
    "observed_targets", "precise_landmarks_config", "precise_photometric_config", "quick_config", "rotation_error_deg",
    "sample_problem", "stack_targets", "start_appearance", "two_look_targets",
    "PROFILE_SAMPLES", "PROFILE_TURN", "profile_edge", "profile_turn_weight", "silhouette_distance",
]
