"""Landmarks of a posed head: 3D points on the mesh from the embeddings, and their projection through a camera.

The one implementation of landmark geometry: the fit, the photometric stage, synthetic problems and the
MediaPipe->68 calibration all read landmarks through :func:`embedded_points` / :func:`project_landmarks`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from flamejax._typing import Array, Float, Int
from flamejax.camera import Camera, ndc_to_pixels, project_ndc
from flamejax.flame._forward import FlameParams, flame_forward
from flamejax.flame._landmarks import MAX_CONTOUR_YAW_DEG, LandmarkEmbedding
from flamejax.flame._model import FlameModel


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LandmarkPoints3D:
    """Landmarks of a posed head, FLAME head space (metres)."""

    inner: Float[Array, "51 3"]
    """iBUG points 17..67 (brows, nose, eyes, mouth)."""
    contour: Float[Array, "rows 17 3"]
    """iBUG jaw contour 0..16 for every yaw bin (79 rows), or for the one bin it was built for; projecting picks
    the bin of the camera's yaw (see :func:`contour_bin`)."""
    mediapipe: Float[Array, "n_mp 3"]
    """The embedded MediaPipe points, in the order of ``LandmarkEmbedding.mediapipe_ids``."""
    iris: Float[Array, "10 3"]
    """Iris centres and rings, MediaPipe order 468..477."""
    face: Float[Array, "n_face 3"] | None = None
    """The face region's vertices (``LandmarkEmbedding.face_vertices``), for the silhouette term."""

    def ibug68(self, head_to_camera: Float[Array, "3 3"]) -> Float[Array, "68 3"]:
        """The 68 iBUG points with the jaw contour of the yaw of ``head_to_camera`` (the only row if there is one)."""
        row = contour_bin(head_to_camera) if self.contour.shape[0] > 1 else 0
        return jnp.concatenate([self.contour[row], self.inner])


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ProjectedLandmarks:
    """Landmarks of a head seen by a camera, in NDC of the image (``(-1, -1)`` top-left, see :mod:`flamejax.camera`)."""

    lmk68: Float[Array, "68 2"]
    """iBUG 68: jaw contour 0..16 (yaw-dependent), inner points 17..67."""
    mediapipe: Float[Array, "n_mp 2"]
    """The embedded MediaPipe points, in the order of ``LandmarkEmbedding.mediapipe_ids``."""
    iris: Float[Array, "10 2"]
    """MediaPipe iris points 468..477."""
    face: Float[Array, "n_face 2"] | None = None
    """The face region's vertices (``LandmarkEmbedding.face_vertices``), for the silhouette term; fit results
    leave them out (:meth:`points`)."""

    def points(self) -> "ProjectedLandmarks":
        """The landmarks alone, without the face region's vertices: what a fit result keeps."""
        return dataclasses.replace(self, face=None)

    def to_pixels(self, image_size: int) -> "ProjectedLandmarks":
        """The same landmarks in pixels of a square ``image_size`` image (pixel centres at ``+0.5``)."""
        return jax.tree.map(lambda ndc: ndc_to_pixels(ndc, image_size), self)


def barycentric_points(vertices: Float[Array, "verts 3"], vertex_ids: Int[Array, "*n 3"],
                       bary: Float[Array, "*n 3"]) -> Float[Array, "*n 3"]:
    """Points given as barycentric combinations of three vertices each."""
    return jnp.einsum("...kc,...k->...c", vertices[vertex_ids], bary, precision=jax.lax.Precision.HIGHEST)


def contour_bin(head_to_camera: Float[Array, "3 3"]) -> Int[Array, ""]:
    """Row of the dynamic contour embedding for a head rotation relative to the camera.

    Rows 0..39 hold yaw 0..+39 degrees (face turned towards its own left, +x), rows 40..78 yaw -1..-39. This is
    DECA's binning with the sign of the yaw as this camera convention sees it; checked by the normals of the
    chosen contour vertices (they face sideways, not away from the camera) in the tests.
    """
    r = head_to_camera
    yaw = jnp.arctan2(-r[2, 0], jnp.sqrt(r[0, 0] ** 2 + r[1, 0] ** 2))
    angle = jnp.round(jnp.minimum(jnp.rad2deg(yaw), MAX_CONTOUR_YAW_DEG)).astype(jnp.int32)
    negative = jnp.where(angle < -MAX_CONTOUR_YAW_DEG, 2 * MAX_CONTOUR_YAW_DEG, MAX_CONTOUR_YAW_DEG - angle)
    return jnp.where(angle < 0, negative, angle)


def embedded_points(embedding: LandmarkEmbedding, vertices: Float[Array, "verts 3"],
                    contour_row: Int[Array, ""] | None = None) -> LandmarkPoints3D:
    """Landmarks on vertices already computed (e.g. by a renderer's forward pass). With ``contour_row`` only that
    yaw row of the jaw contour is interpolated (the cheap path when the head changes every step); without it
    every row is kept (a fixed head seen under many poses)."""
    contour_vertices, contour_bary = embedding.contour_vertices, embedding.contour_bary
    if contour_row is not None:
        contour_vertices, contour_bary = contour_vertices[contour_row][None], contour_bary[contour_row][None]
    return LandmarkPoints3D(
        inner=barycentric_points(vertices, embedding.static_vertices, embedding.static_bary),
        contour=barycentric_points(vertices, contour_vertices, contour_bary),
        mediapipe=barycentric_points(vertices, embedding.mediapipe_vertices, embedding.mediapipe_bary),
        iris=vertices[embedding.iris_vertices],
        face=vertices[embedding.face_vertices],
    )


def landmark_points(model: FlameModel, params: FlameParams, contour_row: Int[Array, ""] | None = None
                    ) -> LandmarkPoints3D:
    """Landmarks of the head ``params`` describes (see :func:`embedded_points` for ``contour_row``)."""
    if model.landmarks is None:
        raise ValueError("the model has no landmark embedding: load it with load_flame(landmarks=True)")
    return embedded_points(model.landmarks, flame_forward(model, params).vertices, contour_row)


def project_landmarks(camera: Camera, points: LandmarkPoints3D) -> ProjectedLandmarks:
    """Project to NDC, with the jaw-contour row of the camera's yaw (the only row if ``points`` holds one)."""
    return ProjectedLandmarks(
        lmk68=project_ndc(camera, points.ibug68(camera.rotation_matrix())),
        mediapipe=project_ndc(camera, points.mediapipe),
        iris=project_ndc(camera, points.iris),
        face=None if points.face is None else project_ndc(camera, points.face),
    )


def posed_landmarks(model: FlameModel, params: FlameParams, camera: Camera) -> ProjectedLandmarks:
    """Projected landmarks of a head under ``camera``, interpolating only the contour row that camera needs."""
    return project_landmarks(camera, landmark_points(model, params, contour_bin(camera.rotation_matrix())))
