"""Several photographs of one person: preprocess each, fit them with one shared identity."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from flamejax.perception import Preprocessed, PreprocessConfig, preprocess
from flamejax.fitter import lean_on_explained_looks, targets_of
from flamejax.track._core import (FitConfig, FlameModel, LandmarkTargets, PhotometricConfig, PhotometricTargets,
                                  SharedPhotometricResult, fit_photometric_same_person, stack_targets)
from flamejax.track._joint import SAME_PERSON, JointConfig, SamePersonResult, fit_same_person


def photo_targets(photos: list[str | Path], config: PreprocessConfig = PreprocessConfig()
                  ) -> tuple[LandmarkTargets, list[Preprocessed]]:
    """Landmark targets (batched, NDC of each aligned crop) and the preprocessing of each photograph."""
    per_photo, prepared = _photo_target_list(photos, config)
    return stack_targets(per_photo), prepared


def _photo_target_list(photos: list[str | Path], config: PreprocessConfig
                       ) -> tuple[list[LandmarkTargets], list[Preprocessed]]:
    prepared = [preprocess(photo, config) for photo in photos]
    return [targets_of(p) for p in prepared], prepared


def fit_same_person_photos(model: FlameModel, photos: list[str | Path], config: JointConfig = SAME_PERSON,
                           preprocess_config: PreprocessConfig = PreprocessConfig(),
                           init_config: FitConfig | None = None) -> tuple[SamePersonResult, list[Preprocessed]]:
    """``flamejax fit --same-person a.jpg b.jpg ...``: one identity for all photographs, per-photo expression,
    jaw, eyes and camera (each photo's camera in its own aligned crop, see :class:`Preprocessed`). Fitted a second
    time when a photograph's two MediaPipe looks disagree throughout, leaning to the look the first fit explains.

    Raises what :func:`flamejax.perception.preprocess` raises (unreadable photo, no face, ...).
    """
    if len(photos) < 2:
        raise ValueError(f"--same-person needs at least two photographs, got {len(photos)}")
    per_photo, prepared = _photo_target_list(photos, preprocess_config)
    joint = fit_same_person(model, stack_targets(per_photo), config, init_config=init_config)
    leaning, changed = _leaning_targets(prepared, joint, per_photo)
    if changed:
        joint = fit_same_person(model, stack_targets(leaning), config, init_config=init_config)
    return joint, prepared


def _leaning_targets(items: list[Preprocessed], joint: SamePersonResult,
                     targets: list[LandmarkTargets] | None = None) -> tuple[list[LandmarkTargets], list[int]]:
    """Each photograph's targets (``targets``: their :func:`targets_of`, made here when not given); for those whose
    two looks disagree throughout, leaning to the look ``joint`` explains (as the single-photograph
    :class:`flamejax.fitter.Fitter` does, see :func:`flamejax.fitter.lean_on_explained_looks`), and which those
    were."""
    targets = [targets_of(item) for item in items] if targets is None else targets
    return lean_on_explained_looks(items, targets, np.asarray(joint.lmk68))


def refine_same_person_photometric(model: FlameModel, uv_layout, joint: SamePersonResult, items: list[Preprocessed],
                                   config: PhotometricConfig = PhotometricConfig(),
                                   albedo=None) -> SharedPhotometricResult:
    """``flamejax fit --same-person --mode photometric``: ``joint`` (from :func:`fit_same_person_photos` on the
    photographs ``items``) refined against their pixels with one identity and one albedo
    (:func:`flamejax.fit.fit_photometric_same_person`). Only the photographs the joint fit calls ``"ok"`` shape
    the identity and the albedo; outliers are refined under them. Landmark targets as the joint fit's (leaning to
    the look it explains where a photograph's looks disagree)."""
    targets = stack_targets(_leaning_targets(items, joint)[0])
    photo = PhotometricTargets(jnp.asarray(np.stack([item.image for item in items]), jnp.float32),
                               jnp.asarray(np.stack([item.mask for item in items]), jnp.float32), targets)
    used = np.array([status == "ok" for status in joint.status])
    return fit_photometric_same_person(model, uv_layout, photo, joint.shape, joint.params, joint.camera, config,
                                       albedo, used=used)
