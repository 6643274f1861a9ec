"""Pinhole camera with a 6-DoF pose and a field of view.

Conventions (documented once, used everywhere):

* World space is FLAME's head space: +x towards the subject's left, +y up, +z out of the face, metres.
* ``camera.rotation`` (axis-angle) and ``camera.translation`` map world to camera space:
  ``p_cam = R @ p_world + t``. Camera space is OpenGL-like: the camera looks down **-z**, +y is up.
  With ``R = I`` and ``t = (0, 0, -1)`` the camera sits 1 m in front of the face on the +z axis, looking at it.
* Pixels: ``u`` grows to the right, ``v`` grows downwards, the image spans ``[0, W] x [0, H]`` and the centre of
  pixel ``(row i, column j)`` is ``(j + 0.5, i + 0.5)``. The principal point is the image centre.
* NDC: ``2 * pixel / size - 1``, so ``(-1, -1)`` is the top-left corner and ``(1, 1)`` the bottom-right.
* Other conventions (:func:`opencv_extrinsics`, :func:`world_to_camera_opencv`, :func:`camera_to_world_opengl`,
  :func:`intrinsics_opencv`, :func:`camera_to_world_pose6`): OpenCV camera space is this camera space with y and z
  negated (x right, y down, z forward: ``p_cv = diag(1, -1, -1) p_cam``); OpenGL camera space is this camera
  space itself. OpenCV puts the centre of pixel (i, j) at (j, i), half a pixel before this module's
  (j + 0.5, i + 0.5): :func:`intrinsics` (principal point ``size / 2``) gives this module's pixels,
  :func:`intrinsics_opencv` (principal point ``size / 2 - 0.5``) gives the pixels of ``cv2.projectPoints``.
* A fit's camera is that of its square crop; :func:`photograph_camera_opencv` gives the camera of the photograph
  the crop was cut from (its pixels, the crop's turn in it as a turn about the viewing axis).
* Head pose angles (:func:`yaw_pitch_roll`) decompose ``R`` as ``Ry(yaw) Rx(pitch) Rz(roll)``. A positive yaw
  turns the face towards its own left (FLAME +x), so the nose moves right in the image; a positive pitch turns
  the face downwards (chin towards the camera's -y); a positive roll turns it counter-clockwise in the image.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from flamejax import rotation
from flamejax._typing import Array, Float

DEFAULT_FOV_DEG = 20.0
DEFAULT_DISTANCE = 1.0


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Camera:
    """Pose and intrinsics of one pinhole camera (vmap for a batch)."""

    rotation: Float[Array, "3"]
    """Axis-angle rotation, world (FLAME head space) to camera space."""
    translation: Float[Array, "3"]
    """Translation in camera space, metres: ``p_cam = R p_world + t``."""
    fov_deg: Float[Array, ""]
    """Horizontal (= vertical, square pixels and image) field of view, degrees."""

    @staticmethod
    def default(fov_deg: float = DEFAULT_FOV_DEG, distance: float = DEFAULT_DISTANCE, dtype=jnp.float32) -> "Camera":
        return Camera(
            rotation=jnp.zeros(3, dtype),
            translation=jnp.array([0.0, 0.0, -distance], dtype),
            fov_deg=jnp.asarray(fov_deg, dtype),
        )

    def rotation_matrix(self) -> Float[Array, "3 3"]:
        return rotation.axis_angle_to_matrix(self.rotation)


def focal_length(fov_deg: Float[Array, ""], image_size: int) -> Float[Array, ""]:
    """Focal length in pixels for an image ``image_size`` pixels wide."""
    return 0.5 * image_size / jnp.tan(jnp.deg2rad(fov_deg) / 2.0)


def intrinsics(camera: Camera, image_size: int) -> Float[Array, "3 3"]:
    """OpenCV-style K (v downwards) for the convention of this module, at ``image_size``² pixels."""
    f = focal_length(camera.fov_deg, image_size)
    c = image_size / 2.0
    zero, one = jnp.zeros_like(f), jnp.ones_like(f)
    return jnp.stack([jnp.stack([f, zero, c + zero]), jnp.stack([zero, f, c + zero]), jnp.stack([zero, zero, one])])


def world_to_camera(camera: Camera, points: Float[Array, "n 3"]) -> Float[Array, "n 3"]:
    return jnp.einsum("ij,nj->ni", camera.rotation_matrix(), points, precision=jax.lax.Precision.HIGHEST) + camera.translation


def project(camera: Camera, points: Float[Array, "n 3"], image_size: int) -> tuple[Float[Array, "n 2"], Float[Array, "n"]]:
    """World points to pixel coordinates and positive depth (distance along the viewing axis)."""
    p = world_to_camera(camera, points)
    depth = -p[:, 2]
    safe_depth = jnp.where(jnp.abs(depth) < 1e-6, 1e-6, depth)
    f = focal_length(camera.fov_deg, image_size)
    u = image_size / 2.0 + f * p[:, 0] / safe_depth
    v = image_size / 2.0 - f * p[:, 1] / safe_depth
    return jnp.stack([u, v], axis=-1), depth


def pixels_to_ndc(pixels: Float[Array, "... 2"], image_size: int) -> Float[Array, "... 2"]:
    return pixels * (2.0 / image_size) - 1.0


def ndc_to_pixels(ndc: Float[Array, "... 2"], image_size: int) -> Float[Array, "... 2"]:
    return (ndc + 1.0) * (image_size / 2.0)


def project_ndc(camera: Camera, points: Float[Array, "n 3"]) -> Float[Array, "n 2"]:
    """World points to NDC (resolution-independent: NDC = 2 * pixel / size - 1 for any size)."""
    pixels, _ = project(camera, points, 2)
    return pixels_to_ndc(pixels, 2)


def yaw_pitch_roll(camera: Camera) -> Float[Array, "3"]:
    """Head pose relative to the camera in degrees: R = Ry(yaw) Rx(pitch) Rz(roll) (see module docstring)."""
    return jnp.rad2deg(rotation.matrix_to_euler(camera.rotation_matrix()))


_OPENCV_FROM_CAMERA = (1.0, -1.0, -1.0)
"""Diagonal taking this module's camera axes (y up, looking down -z) to OpenCV's (y down, looking down +z)."""


def _rigid_4x4(rotation_matrix: Float[Array, "3 3"], translation: Float[Array, "3"]) -> Float[Array, "4 4"]:
    bottom = jnp.array([0.0, 0.0, 0.0, 1.0], rotation_matrix.dtype)
    return jnp.concatenate([jnp.concatenate([rotation_matrix, translation[:, None]], axis=1), bottom[None]], axis=0)


def opencv_extrinsics(camera: Camera) -> tuple[Float[Array, "3 3"], Float[Array, "3"]]:
    """OpenCV extrinsics ``(R, t)``: ``p_cv = R @ p_head + t`` with OpenCV camera axes (x right, y down, z forward).

    ``cv2.Rodrigues(R)[0]`` and ``t`` are the ``rvec``, ``tvec`` of ``cv2.projectPoints`` (with
    :func:`intrinsics_opencv`).
    """
    flip = jnp.asarray(_OPENCV_FROM_CAMERA, camera.translation.dtype)
    return camera.rotation_matrix() * flip[:, None], camera.translation * flip


def world_to_camera_opencv(camera: Camera) -> Float[Array, "4 4"]:
    """4x4 world (head space) to OpenCV camera space: ``[R t; 0 0 0 1]`` of :func:`opencv_extrinsics`."""
    return _rigid_4x4(*opencv_extrinsics(camera))


def camera_to_world_opengl(camera: Camera) -> Float[Array, "4 4"]:
    """4x4 OpenGL camera-to-world matrix (x right, y up, the camera looks down its -z; the last column is the
    camera centre in head space), as Blender, three.js and NeRF-style ``transform_matrix`` use it."""
    r_t = camera.rotation_matrix().T
    return _rigid_4x4(r_t, -r_t @ camera.translation)


def camera_to_world_pose6(camera: Camera) -> Float[Array, "6"]:
    """The camera-to-world pose of :func:`camera_to_world_opengl` as axis-angle (3) + camera centre (3), metres:
    flame-head-tracker's ``cam`` vector."""
    r_t = camera.rotation_matrix().T
    return jnp.concatenate([-camera.rotation, -r_t @ camera.translation])


def to_opencv_pixels(k: Float[Array, "3 3"]) -> Float[Array, "3 3"]:
    """An intrinsic matrix of this module's pixels (centre of pixel (i, j) at (j + 0.5, i + 0.5)) for OpenCV's
    (centre at (j, i)): the principal point half a pixel up and left."""
    return k - jnp.array([[0.0, 0.0, 0.5], [0.0, 0.0, 0.5], [0.0, 0.0, 0.0]], k.dtype)


def intrinsics_opencv(camera: Camera, image_size: int) -> Float[Array, "3 3"]:
    """K for OpenCV's pixel convention (centre of pixel (i, j) at (j, i)) at ``image_size``² pixels: the
    principal point is ``image_size / 2 - 0.5``; used with :func:`opencv_extrinsics` it reproduces
    :func:`project` minus half a pixel."""
    return to_opencv_pixels(intrinsics(camera, image_size))


def photograph_camera_opencv(camera: Camera, image_size: int, fit_to_photograph: Float[Array, "2 3"]
                             ) -> tuple[Float[Array, "3 3"], Float[Array, "3 3"], Float[Array, "3"]]:
    """``camera`` of an ``image_size``² crop seen from the photograph the crop was cut from, as ``(K, R, t)``:
    ``u ~ K (R p_head + t)`` in the photograph's pixels (this module's convention; :func:`to_opencv_pixels` for
    OpenCV's), ``R``, ``t`` in OpenCV camera axes as :func:`opencv_extrinsics`.

    ``fit_to_photograph`` maps crop pixels to photograph pixels (e.g. ``Preprocessed.fit_to_original``). Its
    linear part ``A`` is split as ``A f = U Q`` (RQ, f the crop's focal length): the rotation ``Q`` turns the camera
    about its viewing axis (a crop aligned to the eyes is turned in the photograph), the upper-triangular ``U``
    is K's focal part, and the crop's centre mapped into the photograph is K's principal point."""
    affine = jnp.asarray(fit_to_photograph, jnp.float32)
    linear = affine[:, :2] * focal_length(camera.fov_deg, image_size)
    (a, b), (c, d) = linear
    u22 = jnp.hypot(c, d)
    sin, cos = c / u22, d / u22
    u11, u12 = a * cos - b * sin, a * sin + b * cos
    centre = affine[:, :2] @ jnp.full(2, image_size / 2.0, jnp.float32) + affine[:, 2]
    k = jnp.array([[u11, u12, centre[0]], [0.0, u22, centre[1]], [0.0, 0.0, 1.0]])
    turn = jnp.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    r_cv, t_cv = opencv_extrinsics(camera)
    return k, turn @ r_cv, turn @ t_cv


def points_to_opencv_camera(camera: Camera, points: Float[Array, "n 3"]) -> Float[Array, "n 3"]:
    """Head-space points in OpenCV camera space (x right, y down, z forward = positive depth), metres."""
    return world_to_camera(camera, points) * jnp.asarray(_OPENCV_FROM_CAMERA, points.dtype)
