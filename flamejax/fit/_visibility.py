"""Which landmarks to trust at hard poses: visibility from the model's normals, robust reweighting, confidence.

Pure functions on one image (``jax.vmap`` batches them), meant to scale the per-point weights of the landmark loss
(``LandmarkTargets.lmk68_weight`` / ``mediapipe_weight``) between or inside fitting stages:

* :func:`visibility_weights`: a point whose surface faces away from the camera under the current pose is a guess of
  the detector (it cannot see it); judged by the FLAME surface normal at the embedded point.
* :func:`robust_weights`: iteratively-reweighted least squares weights (Geman-McClure or Tukey) of residuals
  normalised by the size of the face, so that points no head pose explains stop pulling the fit.
* :func:`fit_confidence`: one number in [0, 1] per image from the normalised residuals and the weights (times
  :func:`target_agreement`, the share of the face the detector's two looks agree on, in the fit's confidence).
* :func:`two_look_targets`: targets from FaceMesh's two looks at a face (the crop and its mirror image), each point
  weighted by how well the looks agree: where they disagree at least one is wrong (host side, NumPy);
  :func:`leaning_look_targets`: where they disagree throughout, a second fit's targets, leaning to the look a
  first fit explains.
* :func:`silhouette_contour` and :func:`contour_conventions`: the 68 points with the jaw contour either on the
  visible outline of the head (300-W style) or as fixed 3D points projected (AFLW2000-3D style).

Camera and pixel conventions are :mod:`flamejax.camera`'s.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from flamejax._typing import Array, Float, Int
from flamejax.camera import Camera, project_ndc, world_to_camera
from flamejax.fit._config import WeightingConfig
from flamejax.fit._targets import LandmarkTargets
from flamejax.flame import (FlameModel, FlameParams, ProjectedLandmarks, barycentric_points, contour_bin,
                            embedded_points, flame_forward, project_landmarks)
from flamejax.flame._layout import CONTOUR_68, IBUG68_FROM_MEDIAPIPE, INNER_68, NUM_MESH_POINTS

_HI = jax.lax.Precision.HIGHEST


INNER_LIP_PROXY = ((60, 48), (61, 50), (62, 51), (63, 52), (64, 54), (65, 56), (66, 57), (67, 58))
"""(inner-lip iBUG point, outer-lip point whose normal stands in for it): the inner-lip surfaces face each other,
so their own normals say nothing about whether the camera sees the mouth."""


def point_normals(vertex_normals: Float[Array, "verts 3"], vertex_ids: Int[Array, "*n 3"],
                  bary: Float[Array, "*n 3"]) -> Float[Array, "*n 3"]:
    """Unit surface normals at embedded points: the mesh's vertex normals interpolated barycentrically."""
    normal = jnp.einsum("...kc,...k->...c", vertex_normals[vertex_ids], bary, precision=_HI)
    return normal / jnp.maximum(jnp.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)


def triangle_normals(vertices: Float[Array, "verts 3"], vertex_ids: Int[Array, "*n 3"]) -> Float[Array, "*n 3"]:
    """Unit normals of the triangles points are embedded in (FLAME's winding: outwards).

    Needs only the three vertices of each point, so it works on a landmark-only model (``landmark_model``).
    """
    corners = vertices[vertex_ids]
    normal = jnp.cross(corners[..., 1, :] - corners[..., 0, :], corners[..., 2, :] - corners[..., 0, :])
    return normal / jnp.maximum(jnp.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)


def lip_normals_from_outer(normals68: Float[Array, "68 3"]) -> Float[Array, "68 3"]:
    """68-point normals with the inner lip's replaced by the outer lip's (see :data:`INNER_LIP_PROXY`)."""
    inner, outer = (jnp.asarray(ids) for ids in zip(*INNER_LIP_PROXY))
    return normals68.at[inner].set(normals68[outer])


def facing_cosine(camera: Camera, points: Float[Array, "n 3"], normals: Float[Array, "n 3"]) -> Float[Array, "n"]:
    """Cosine between each surface normal and the direction from its point to the camera centre.

    1: the surface faces the camera; 0: seen edge-on (the silhouette); < 0: it faces away (hidden).
    """
    to_camera = -world_to_camera(camera, points)
    to_camera = to_camera / jnp.maximum(jnp.linalg.norm(to_camera, axis=-1, keepdims=True), 1e-12)
    normals_cam = jnp.einsum("ij,nj->ni", camera.rotation_matrix(), normals, precision=_HI)
    return jnp.sum(normals_cam * to_camera, axis=-1)


def visibility_weights(camera: Camera, points: Float[Array, "n 3"], normals: Float[Array, "n 3"],
                       floor: float = 0.05, threshold: float = 0.05, softness: float = 0.05) -> Float[Array, "n"]:
    """Per-point weights in [floor, 1]: about 1 where the surface faces the camera, ``floor`` where it faces away.

    A smooth step of the facing cosine around ``threshold`` (a point seen at a grazing angle is already poorly
    located by a detector) with width ``softness``; smooth so it can sit inside a differentiated loss.
    """
    step = jax.nn.sigmoid((facing_cosine(camera, points, normals) - threshold) / softness)
    return floor + (1.0 - floor) * step


def face_size(points: Float[Array, "n 2"], weight: Float[Array, "n"] | None = None) -> Float[Array, ""]:
    """sqrt(width * height) of the bounding box of the points with positive weight (the NME "face box" scale).

    Unlike the eye-corner distance it does not collapse when the head turns to profile.
    """
    keep = jnp.ones(points.shape[0], bool) if weight is None else weight > 0
    lo = jnp.min(jnp.where(keep[:, None], points, jnp.inf), axis=0)
    hi = jnp.max(jnp.where(keep[:, None], points, -jnp.inf), axis=0)
    extent = jnp.where(jnp.isfinite(hi - lo), hi - lo, 0.0)
    return jnp.sqrt(jnp.maximum(extent[0] * extent[1], 1e-12))


def geman_mcclure_weights(residual: Float[Array, "n"], scale: float) -> Float[Array, "n"]:
    """IRLS weights of the Geman-McClure loss r²/(r² + c²), normalised to 1 at r = 0: (c²/(r² + c²))².

    A residual of ``scale`` gets 1/4, of 3 ``scale`` 1/100: never exactly zero, so a wrong start can recover.
    """
    c2 = scale**2
    return (c2 / (residual**2 + c2)) ** 2


def tukey_weights(residual: Float[Array, "n"], scale: float) -> Float[Array, "n"]:
    """IRLS weights of Tukey's biweight: (1 - (r/c)²)² inside ``scale``, exactly 0 beyond."""
    inside = jnp.clip(1.0 - (residual / scale) ** 2, 0.0, 1.0)
    return inside**2


def normalised_residuals(predicted: Float[Array, "n 2"], target: Float[Array, "n 2"],
                         weight: Float[Array, "n"]) -> Float[Array, "n"]:
    """Distance of each point to its target over the face size of the (positively weighted) targets."""
    return jnp.linalg.norm(predicted - target, axis=-1) / face_size(target, weight)


def robust_weights(predicted: Float[Array, "n 2"], target: Float[Array, "n 2"], weight: Float[Array, "n"],
                   scale: float = 0.08, kind: str = "geman_mcclure") -> Float[Array, "n"]:
    """Weights that switch off targets no fitted pose explains (``weight`` times an IRLS factor).

    ``predicted`` are the model's landmarks under the fitted pose, so a large residual is a point the model
    cannot reach. Residuals are in units of the face size (:func:`face_size`); ``scale`` 0.08 is about twice a
    good fit's typical error. ``kind``: ``"geman_mcclure"`` (soft) or ``"tukey"`` (hard cut-off at ``scale``).
    """
    if kind not in ("geman_mcclure", "tukey"):
        raise ValueError(f"robust_weights: kind must be 'geman_mcclure' or 'tukey', got {kind!r}")
    residual = normalised_residuals(predicted, target, weight)
    factor = geman_mcclure_weights(residual, scale) if kind == "geman_mcclure" else tukey_weights(residual, scale)
    return weight * factor


def fit_confidence(predicted: Float[Array, "n 2"], target: Float[Array, "n 2"], visibility: Float[Array, "n"],
                   robust: Float[Array, "n"], error_scale: float = 0.05) -> Float[Array, ""]:
    """Confidence of one image's fit in [0, 1]: how much of the face was seen and explained, and how well.

    ``kept`` = share of the visibility weight the robust weights keep (points no pose explains lower it);
    ``error`` = visibility-weighted mean residual over the face size. Confidence = kept · exp(-(error/scale)²):
    0.78 at an error of half ``error_scale`` with every point kept, 0.37 at ``error_scale``.
    """
    total = jnp.maximum(jnp.sum(visibility), 1e-12)
    kept = jnp.sum(robust * visibility) / total
    error = jnp.sum(normalised_residuals(predicted, target, visibility) * visibility) / total
    return jnp.clip(kept, 0.0, 1.0) * jnp.exp(-((error / error_scale) ** 2))


TWO_LOOK_SCALE = 0.05
"""Disagreement between the two looks, over the face size, at which a point's weight falls to 1/4 (1/100 at 3x)."""


def two_look_targets(points478: Float[np.ndarray, "478 2"], mirrored478: Float[np.ndarray, "478 2"] | None,
                     image_size: int, scale: float = TWO_LOOK_SCALE,
                     person: Float[np.ndarray, "S S"] | None = None,
                     profile: tuple[np.ndarray, np.ndarray] | None = None) -> LandmarkTargets:
    """Fitting targets from MediaPipe's points on an image and on its mirror image (mapped back and renumbered,
    ``Preprocessed.mirrored478``), in pixels of a square ``image_size`` crop.

    Each point's target is the mean of the two looks and its weight :func:`geman_mcclure_weights` of their
    distance over the face size (:func:`face_size` of the inner 51 points): at strong yaw FaceMesh sometimes
    folds the far half of the face inwards in one look and not in the other, and a point the looks put in
    different places is one that at least one of them got wrong. The iris weights are those of the iris points.
    Without a second look (``None``): the one set at full weight, as :meth:`LandmarkTargets.from_pixels`.
    ``person``: the person's silhouette on the crop (``Preprocessed.person``), see ``LandmarkTargets.outside`` and
    ``LandmarkTargets.profile``; or ``profile`` found already (:meth:`LandmarkTargets.from_pixels`).
    """
    points478 = np.asarray(points478, np.float32)
    if mirrored478 is None:
        return LandmarkTargets.from_pixels(points478, IBUG68_FROM_MEDIAPIPE @ points478, image_size, person=person,
                                           profile=profile)
    mirrored478 = np.asarray(mirrored478, np.float32)
    mean478 = (points478 + mirrored478) / 2
    mean68 = (IBUG68_FROM_MEDIAPIPE @ mean478).astype(np.float32)
    size = float(face_size(jnp.asarray(mean68[INNER_68])))
    agreement68 = geman_mcclure_weights(
        np.linalg.norm(IBUG68_FROM_MEDIAPIPE @ (points478 - mirrored478), axis=-1) / size, scale)
    agreement478 = geman_mcclure_weights(np.linalg.norm(points478 - mirrored478, axis=-1) / size, scale)
    targets = LandmarkTargets.from_pixels(mean478, mean68, image_size, person=person, profile=profile)
    return dataclasses.replace(targets, lmk68_weight=jnp.asarray(agreement68, jnp.float32),
                               iris_weight=jnp.asarray(agreement478[NUM_MESH_POINTS:], jnp.float32),
                               mediapipe_weight=jnp.asarray(agreement478, jnp.float32))


LOOK_DISAGREEMENT = 0.08
"""Mean distance between the two looks' inner 51 points, over the face size, above which one look is taken to be
broken (FaceMesh folding the far half of a turned face in one look): :func:`leaning_look_targets` then picks the
look a first fit explains. On the identity benchmark's renders turned 40 degrees or less the looks stay under
0.06."""

LOOK_SHARPNESS = 8.0
"""Exponent of the residual ratio in :func:`leaning_look_targets`: a look with 1.2x the other's residual gets
weight 0.19, with 1.5x 0.04."""


def look_disagreement(points478: Float[np.ndarray, "478 2"], mirrored478: Float[np.ndarray, "478 2"] | None
                      ) -> float:
    """Mean distance between the two looks' inner 51 iBUG points over the face size of their mean (0 without a
    second look, or with a look that is not finite)."""
    if mirrored478 is None or not np.all(np.isfinite(mirrored478)) or not np.all(np.isfinite(points478)):
        return 0.0
    first = IBUG68_FROM_MEDIAPIPE[INNER_68] @ np.asarray(points478, np.float32)
    second = IBUG68_FROM_MEDIAPIPE[INNER_68] @ np.asarray(mirrored478, np.float32)
    size = float(face_size(jnp.asarray((first + second) / 2)))
    return float(np.mean(np.linalg.norm(first - second, axis=-1)) / size)


def leaning_look_targets(points478: Float[np.ndarray, "478 2"], mirrored478: Float[np.ndarray, "478 2"],
                         fitted68: Float[np.ndarray, "68 2"], image_size: int,
                         sharpness: float = LOOK_SHARPNESS, person: Float[np.ndarray, "S S"] | None = None,
                         profile: tuple[np.ndarray, np.ndarray] | None = None) -> LandmarkTargets:
    """Targets for a second fit of a face whose two looks disagree (:func:`look_disagreement` above
    :data:`LOOK_DISAGREEMENT`), leaning to the look that a first fit to :func:`two_look_targets` explains.

    ``fitted68``: that fit's 68 points in pixels of the crop. Each look's residual is the mean distance of its
    inner 51 points to the fitted ones; the look weights are ``r_other^s / (r_a^s + r_b^s)`` (``s`` =
    ``sharpness``), and every point's target is the weighted mean of the looks at full weight: which look is wrong
    is now known, so the per-point agreement weights of :func:`two_look_targets` (which keep pulling towards the
    broken look's half of the face) are dropped. Equal residuals give the plain mean. ``person`` / ``profile`` as
    in :meth:`LandmarkTargets.from_pixels`."""
    points478, mirrored478 = np.asarray(points478, np.float32), np.asarray(mirrored478, np.float32)
    fitted51 = np.asarray(fitted68, np.float32)[INNER_68]
    residuals = [float(np.mean(np.linalg.norm(IBUG68_FROM_MEDIAPIPE[INNER_68] @ look - fitted51, axis=-1)))
                 for look in (points478, mirrored478)]
    scaled = np.asarray(residuals) / max(max(residuals), 1e-12)
    first_weight = scaled[1] ** sharpness / max(scaled[0] ** sharpness + scaled[1] ** sharpness, 1e-12)
    leaning478 = (first_weight * points478 + (1.0 - first_weight) * mirrored478).astype(np.float32)
    return LandmarkTargets.from_pixels(leaning478, IBUG68_FROM_MEDIAPIPE @ leaning478, image_size, person=person,
                                       profile=profile)


def target_agreement(lmk68_weight: Float[Array, "68"]) -> Float[Array, ""]:
    """Mean weight of the inner 51 targets that have any: 1 for a detector's single look (every weight 1); for
    :func:`two_look_targets` the share of the face its two looks agree on. A factor of the fit's confidence: a fit
    can explain the few points two looks agree on well and still be wrong, as when one look folded half the face.
    """
    inner = lmk68_weight[INNER_68]
    return jnp.sum(inner) / jnp.maximum(jnp.sum(inner > 0), 1)


def silhouette_contour(camera: Camera, contour_rows: Float[Array, "rows 17 3"],
                       contour_normals: Float[Array, "rows 17 3"]) -> tuple[Float[Array, "17 3"], Float[Array, "17 3"]]:
    """The 17 jaw points on the visible outline (300-W style) for any yaw, and their normals, head space.

    ``contour_rows`` hold each contour point's candidates, row 0 the frontal one (e.g. the rows of FLAME's dynamic
    embedding, one per yaw). Each point's candidates lie on a line across its side of the face; the outline is the
    candidate that reaches furthest out of the face in the image, along the point's outward direction as the
    camera sees it: away from the face's midline and down from the jaw's top ends, and on the side turned away
    from the camera also forwards (out of the head, towards the face's profile). That is where the line meets the
    head's occluding contour, or the end of the line where it does not reach it. Unlike a table indexed by yaw it
    keeps following the outline beyond the table's last row, and unlike the candidate seen most edge-on it is
    never a fold inside the face (a cheek's hollow seen at a grazing angle), nor jumps across the face between two
    nearby poses.
    """
    front = contour_rows[0]
    centre = jnp.stack([jnp.mean(front[:, 0]), 0.5 * (front[0, 1] + front[-1, 1]), jnp.min(front[:, 2])])
    sideways = (front - centre).at[:, 2].set(0.0)
    turned_away = jnp.clip(-2.0 * facing_cosine(camera, front, sideways / jnp.maximum(
        jnp.linalg.norm(sideways, axis=-1, keepdims=True), 1e-9)), 0.0, 1.0)
    outward = jnp.stack([sideways[:, 0], (1.0 - turned_away) * sideways[:, 1], turned_away * (front[:, 2] - centre[2])],
                        axis=-1)
    image_outward = project_ndc(camera, front + outward) - project_ndc(camera, front)
    reach = jnp.einsum("rpk,pk->rp", jax.vmap(lambda r: project_ndc(camera, r))(contour_rows), image_outward,
                       precision=_HI)
    best = jnp.argmax(reach, axis=0)[None, :, None]
    return jnp.take_along_axis(contour_rows, best, axis=0)[0], jnp.take_along_axis(contour_normals, best, axis=0)[0]


def contour_conventions(camera: Camera, silhouette68: Float[Array, "68 3"], anatomical68: Float[Array, "68 3"],
                        anatomical_normals: Float[Array, "68 3"]
                        ) -> tuple[Float[Array, "68 2"], Float[Array, "68 2"], Float[Array, "68"]]:
    """The 68 points in NDC in both conventions, and which of the fixed 3D points the camera sees.

    Returns ``(outline, projected_3d, visible)``: ``outline`` has the jaw on the visible silhouette (300-W
    annotations), ``projected_3d`` the fixed 3D points projected wherever they are, hidden or not (AFLW2000-3D);
    the inner 51 points are the same 3D points in both. ``visible`` is 1 where a fixed 3D point's surface faces the
    camera, else 0 (AFLW2000-3D keeps hidden points; a user may want to drop them).
    """
    visible = (facing_cosine(camera, anatomical68, anatomical_normals) > 0.0).astype(anatomical68.dtype)
    return project_ndc(camera, silhouette68), project_ndc(camera, anatomical68), visible


RIGHT_EYE_68, LEFT_EYE_68 = tuple(range(36, 42)), tuple(range(42, 48))
"""iBUG eye contours of the subject's right and left eye: they stand in for the irises' visibility."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LandmarkWeights:
    """Per-point weights of one image at a pose (factors on top of the targets' own weights), and what they say."""

    lmk68: Float[Array, "68"]
    """Visibility × robust weight of each iBUG point (the jaw contour is the outline: visibility 1)."""
    mediapipe: Float[Array, "n_mp"]
    """The same for the embedded MediaPipe points, in ``LandmarkEmbedding.mediapipe_ids`` order."""
    iris: Float[Array, "10"]
    """Visibility of each iris (that of its eye's iBUG points)."""
    visible68: Float[Array, "68"]
    """Visibility alone of the iBUG points (in [floor, 1])."""
    confidence: Float[Array, ""]
    """:func:`fit_confidence` of the 68 points at this pose."""

    def applied_to(self, targets: LandmarkTargets, mediapipe_ids: Int[Array, "n_mp"]) -> LandmarkTargets:
        """``targets`` with these weights multiplied into theirs."""
        return dataclasses.replace(
            targets, lmk68_weight=targets.lmk68_weight * self.lmk68, iris_weight=targets.iris_weight * self.iris,
            mediapipe_weight=targets.mediapipe_weight.at[mediapipe_ids].multiply(self.mediapipe))


def weighted_targets(model: FlameModel, params: FlameParams, camera: Camera, targets: LandmarkTargets,
                     cfg: WeightingConfig) -> LandmarkTargets:
    """``targets`` with :func:`pose_weights` at the pose of ``params`` and ``camera`` multiplied into their weights;
    as they are when ``cfg`` turns both weightings off."""
    if not cfg.enabled:
        return targets
    return pose_weights(model, params, camera, targets, cfg).applied_to(targets, model.landmarks.mediapipe_ids)


def pose_weights(model: FlameModel, params: FlameParams, camera: Camera, targets: LandmarkTargets,
                 cfg: WeightingConfig) -> LandmarkWeights:
    """Landmark weights of one image under a fitted pose: visibility (``cfg.visibility``) × Geman-McClure IRLS
    (``cfg.robust``) of the residuals to ``targets``; factors of 1 where a switch is off. Works on the full model
    or its landmark-only subset. Not differentiated (stop_gradient): a stage holds them fixed."""
    return weighed_landmarks(model, params, camera, targets, cfg)[0]


def weighed_landmarks(model: FlameModel, params: FlameParams, camera: Camera, targets: LandmarkTargets,
                      cfg: WeightingConfig) -> tuple[LandmarkWeights, ProjectedLandmarks]:
    """:func:`pose_weights` and the projected landmarks they were judged on (those of
    :func:`flamejax.flame.posed_landmarks`), from one FLAME forward pass."""
    emb = model.landmarks
    vertices = flame_forward(model, params).vertices
    row = contour_bin(camera.rotation_matrix())
    points = embedded_points(emb, vertices, row)
    points68, points_mp = points.ibug68(camera.rotation_matrix()), points.mediapipe
    ids68 = jnp.concatenate([emb.contour_vertices[row], emb.static_vertices])
    ones68, ones_mp = jnp.ones(68, points68.dtype), jnp.ones(points_mp.shape[0], points68.dtype)
    if cfg.visibility:
        def visible(points, normals):
            return visibility_weights(camera, points, normals, cfg.visibility_floor, cfg.visibility_threshold,
                                      cfg.visibility_softness)

        seen68 = visible(points68, lip_normals_from_outer(triangle_normals(vertices, ids68)))
        seen68 = seen68.at[CONTOUR_68].set(1.0)
        seen_mp = visible(points_mp, triangle_normals(vertices, emb.mediapipe_vertices))
    else:
        seen68, seen_mp = ones68, ones_mp
    seen_iris = jnp.concatenate([jnp.full(5, jnp.min(seen68[jnp.asarray(RIGHT_EYE_68)])),
                                 jnp.full(5, jnp.min(seen68[jnp.asarray(LEFT_EYE_68)]))])
    projected = project_landmarks(camera, points)
    pred68, pred_mp = projected.lmk68, projected.mediapipe
    goal_mp, weight_mp = targets.mediapipe[emb.mediapipe_ids], targets.mediapipe_weight[emb.mediapipe_ids]
    gm68 = geman_mcclure_weights(normalised_residuals(pred68, targets.lmk68, targets.lmk68_weight), cfg.robust_scale)
    if cfg.robust:
        kept68 = gm68
        kept_mp = geman_mcclure_weights(normalised_residuals(pred_mp, goal_mp, weight_mp), cfg.robust_scale)
    else:
        kept68, kept_mp = ones68, ones_mp
    confidence = target_agreement(targets.lmk68_weight) * fit_confidence(
        pred68, targets.lmk68, seen68 * targets.lmk68_weight, gm68, cfg.confidence_scale)
    weights = LandmarkWeights(lmk68=seen68 * kept68, mediapipe=seen_mp * kept_mp, iris=seen_iris, visible68=seen68,
                              confidence=confidence)
    return jax.lax.stop_gradient(weights), projected


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LandmarkConventions:
    """A fitted head's 68 points in NDC in the two annotation conventions (see :func:`contour_conventions`)."""

    outline68: Float[Array, "68 2"]
    """Jaw contour on the visible silhouette of the head (300-W style annotations)."""
    projected68: Float[Array, "68 2"]
    """Fixed 3D points projected, hidden ones included (AFLW2000-3D style)."""
    visible68: Float[Array, "68"]
    """1 where the fixed 3D point's surface faces the camera, else 0."""


def landmark_conventions(model: FlameModel, params: FlameParams, camera: Camera) -> LandmarkConventions:
    """The 68 points of the head ``params`` describes under ``camera`` in both conventions (one image; works on
    the full model or its landmark-only subset)."""
    emb = model.landmarks
    vertices = flame_forward(model, params).vertices
    outline, _ = silhouette_contour(camera, barycentric_points(vertices, emb.contour_vertices, emb.contour_bary),
                                    triangle_normals(vertices, emb.contour_vertices))
    silhouette68 = jnp.concatenate([outline, barycentric_points(vertices, emb.static_vertices, emb.static_bary)])
    anatomical68 = barycentric_points(vertices, emb.full_vertices, emb.full_bary)
    normals68 = lip_normals_from_outer(triangle_normals(vertices, emb.full_vertices))
    return LandmarkConventions(*contour_conventions(camera, silhouette68, anatomical68, normals68))


__all__ = ["contour_conventions", "face_size", "facing_cosine", "fit_confidence", "geman_mcclure_weights",
           "INNER_LIP_PROXY", "LandmarkConventions", "landmark_conventions", "LandmarkWeights", "leaning_look_targets",
           "lip_normals_from_outer", "look_disagreement", "LOOK_DISAGREEMENT", "LOOK_SHARPNESS",
           "normalised_residuals", "point_normals", "pose_weights", "robust_weights", "silhouette_contour",
           "target_agreement", "triangle_normals", "tukey_weights", "two_look_targets", "TWO_LOOK_SCALE",
           "visibility_weights", "weighed_landmarks"]
