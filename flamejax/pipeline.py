"""Photograph in, FLAME fit and files out: preprocessing, batched fitting, and the per-image outputs.

The library path a reader should see: ``preprocess`` -> ``LandmarkTargets`` -> ``fit_landmarks_batch`` ->
:class:`ImageFit` -> :func:`write_outputs`. The CLI (``flamejax fit``) and the directory runner call these.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from flamejax import camera as cam
from flamejax.fit import (STATUS_NAMES, STATUS_OK, FitConfig, FitResult, InitialGuess, LandmarkTargets,
                          PhotometricConfig, PhotometricResult, PhotometricTargets, fit_landmarks_batch,
                          fit_photometric_batch, landmark_model, stack_targets)
from flamejax.flame import FlameModel, FlameParams, flame_forward


@dataclasses.dataclass(frozen=True)
class ImageFit:
    """One image's fit as NumPy arrays, with what is needed to map it back onto the photograph."""

    name: str
    result: FitResult
    """Un-batched fit result (NumPy leaves)."""
    vertices: np.ndarray
    """(5023, 3) posed mesh, head space."""
    status: str
    seconds: float
    """This image's share of the batch's fitting time."""
    init_method: str = "linear"
    photometric: PhotometricResult | None = None
    """Photometric-mode extras (texture, light, render, photometric errors); ``result`` then holds the
    photometric parameters, camera and landmarks."""

    @property
    def ok(self) -> bool:
        return int(self.result.status) == STATUS_OK


def targets_of(item) -> LandmarkTargets:
    """Landmark targets of a ``Preprocessed`` image."""
    return LandmarkTargets.from_pixels(item.points478, item.lmk68, item.image.shape[0], iris=item.iris)


def network_guess(model: FlameModel, items: list, batch_size: int, method: str, deca=None, mica=None
                  ) -> tuple[InitialGuess | None, str]:
    """DECA/MICA starts for a batch of preprocessed images (``None`` and ``"linear"`` when no network runs).

    The networks see the aligned crop; shape and expression are cut to the model's component counts.
    """
    if method == "linear":
        return None, "linear"
    from flamejax.init import initialise_batch_from_networks

    crops = [it.crop for it in items]
    lmk68 = np.stack([it.lmk68 * (it.crop.shape[0] / it.image.shape[0]) for it in items])
    inits = initialise_batch_from_networks(crops, lmk68, method, deca, mica)
    if inits is None:
        return None, "linear"
    n_shape, n_exp = model.num_shape, model.num_expression
    zeros = lambda n: np.zeros(n, np.float32)  # noqa: E731
    fit = lambda v, n: zeros(n) if v is None else np.asarray(v, np.float32)[:n]  # noqa: E731
    rows = [(fit(i.shape, n_shape), fit(i.expression, n_exp), fit(i.jaw, 3), float(i.shape is not None),
             float(i.expression is not None)) for i in inits]
    rows += [(zeros(n_shape), zeros(n_exp), zeros(3), 0.0, 0.0)] * (batch_size - len(rows))
    columns = [np.stack(c).astype(np.float32) for c in zip(*rows)]
    guess = InitialGuess(*(jnp.asarray(c) for c in columns))
    providers = ", ".join(f"{k}: {v}" for k, v in inits[0].providers.items())
    return guess, f"{inits[0].method} ({providers})"


_posed_vertices = jax.jit(jax.vmap(lambda model, params: flame_forward(model, params).vertices, in_axes=(None, 0)))


def unchanged(tree):
    """The default placement of batch inputs: leave them where JAX puts them."""
    return tree


def fit_batch(model: FlameModel, items: list, names: list[str], config: FitConfig, batch_size: int, *,
              init_method: str = "linear", deca=None, mica=None, photometric: PhotometricConfig | None = None,
              uv_layout=None, albedo=None, place_batch=unchanged, fit_model: FlameModel | None = None
              ) -> list[ImageFit]:
    """Fit up to ``batch_size`` preprocessed images as one fixed-size padded batch.

    The network start (if any), the landmark fit, the photometric fit (if ``photometric``), the posed meshes.
    ``place_batch`` puts batch-shaped inputs on devices (e.g. sharded over a mesh, see :mod:`flamejax.distributed`);
    ``fit_model`` is the (placed) landmark model, by default ``landmark_model(model)``.
    """
    start = time.perf_counter()
    targets = place_batch(stack_targets([targets_of(it) for it in items], batch_size))
    guess, method = network_guess(model, items, batch_size, init_method, deca, mica)
    result = fit_landmarks_batch(fit_model or model, targets, config, None if guess is None else place_batch(guess))
    photo = None
    if photometric is not None:
        photo = _photometric_batch(model, items, batch_size, targets, result, photometric, uv_layout, albedo,
                                   place_batch)
        result = dataclasses.replace(result, params=photo.params, camera=photo.camera, landmarks=photo.landmarks,
                                     nme=photo.nme, status=jnp.maximum(result.status, photo.status))
    result, photo, vertices = jax.tree.map(np.asarray, (result, photo, _posed_vertices(model, result.params)))
    share = (time.perf_counter() - start) / len(items)
    row = lambda tree, i: None if tree is None else jax.tree.map(lambda a: a[i], tree)  # noqa: E731
    return [ImageFit(name=name, result=row(result, i), vertices=vertices[i],
                     status=STATUS_NAMES[int(result.status[i])], seconds=share, init_method=method,
                     photometric=row(photo, i))
            for i, name in enumerate(names)]


def fit_preprocessed(model: FlameModel, items: list, config: FitConfig, batch_size: int,
                     names: list[str] | None = None, init_method: str = "linear", deca=None, mica=None,
                     photometric: PhotometricConfig | None = None, uv_layout=None, albedo=None) -> list[ImageFit]:
    """Fit preprocessed images in fixed-size padded batches (one compilation per batch size).

    ``init_method``: ``"linear"`` (weights-free), or ``"deca+mica"``, ``"deca"``, ``"mica"``, ``"auto"`` to start
    from the networks (see :mod:`flamejax.init`); the method used is recorded in each :class:`ImageFit`.
    With ``photometric`` (and the ``uv_layout``), the landmark fit is refined photometrically.
    """
    names = names or [getattr(it, "source", f"image{i}") for i, it in enumerate(items)]
    fit_model = landmark_model(model)
    fits: list[ImageFit] = []
    for start in range(0, len(items), batch_size):
        fits += fit_batch(model, items[start:start + batch_size], names[start:start + batch_size], config,
                          batch_size, init_method=init_method, deca=deca, mica=mica, photometric=photometric,
                          uv_layout=uv_layout, albedo=albedo, fit_model=fit_model)
    return fits


def _photometric_batch(model, chunk, batch_size, targets, result, config, uv_layout, albedo, place_batch=unchanged):
    if uv_layout is None:
        raise ValueError("photometric mode needs the FLAME UV layout (uv_template: head_template_mesh.obj)")
    pad = batch_size - len(chunk)
    size = chunk[0].image.shape[0]
    images = np.stack([it.image for it in chunk] + [np.zeros((size, size, 3), np.float32)] * pad)
    masks = np.stack([it.mask for it in chunk] + [np.zeros((size, size), np.float32)] * pad)
    photo_targets = PhotometricTargets(place_batch(jnp.asarray(images)), place_batch(jnp.asarray(masks)), targets)
    return fit_photometric_batch(model, uv_layout, photo_targets, result.params, result.camera, config, albedo)


def camera_record(camera: cam.Camera, image_size: int) -> dict:
    """The camera as users of the reference expect: yaw/pitch/roll (degrees), x, y, z, fov, K."""
    yaw, pitch, roll = np.asarray(cam.yaw_pitch_roll(camera)).tolist()
    x, y, z = np.asarray(camera.translation).tolist()
    return {
        "yaw": yaw, "pitch": pitch, "roll": roll, "x": x, "y": y, "z": z,
        "rotation_axis_angle": np.asarray(camera.rotation).tolist(),
        "fov_deg": float(camera.fov_deg),
        "K": np.asarray(cam.intrinsics(camera, image_size)).tolist(),
        "image_size": image_size,
        "convention": "p_cam = R p_head + t; camera looks down -z, +y up; pixels: u right, v down",
    }


def fitted_pixels(fit: ImageFit, item) -> dict[str, np.ndarray]:
    """Fitted and target landmarks in fit pixels and in photograph pixels."""
    from flamejax.perception import transform_points

    size = item.image.shape[0]
    fitted68 = np.asarray(cam.ndc_to_pixels(fit.result.landmarks.lmk68, size))
    fitted_iris = np.asarray(cam.ndc_to_pixels(fit.result.landmarks.iris, size))
    return {
        "lmk68_fitted": fitted68, "iris_fitted": fitted_iris, "lmk68_target": item.lmk68, "iris_target": item.iris,
        "lmk68_fitted_original": transform_points(item.fit_to_original, fitted68),
        "lmk68_target_original": transform_points(item.fit_to_original, item.lmk68),
    }


def parameter_record(fit: ImageFit, item) -> dict:
    p: FlameParams = fit.result.params
    size = item.image.shape[0]
    points = fitted_pixels(fit, item)
    return {
        "image": fit.name, "status": fit.status, "init": fit.init_method,
        "shape": p.shape, "exp": p.expression, "head_pose": p.head_pose, "neck_pose": p.neck_pose,
        "jaw_pose": p.jaw_pose, "eye_pose": np.concatenate([p.left_eye_pose, p.right_eye_pose]),
        "cam": camera_record(fit.result.camera, size),
        "fit_to_original": item.fit_to_original, "original_size": list(item.original_size),
        "nme_inner51": float(fit.result.nme),
        "losses": {"rigid_final": float(fit.result.rigid_final_loss),
                   "landmark_final": float(fit.result.landmark_final_loss)},
        "landmarks": points, "mode": "landmark",
        "detection_confidence": item.confidence, "num_faces": item.num_faces,
    } | ({} if fit.photometric is None else {
        "mode": "photometric", "light": fit.photometric.light, "tex": fit.photometric.texture_coeffs,
        "photometric_l1": {"start": float(fit.photometric.photometric_start),
                           "final": float(fit.photometric.photometric_final)},
    })


def write_outputs(outdir: Path, fit: ImageFit, item, model: FlameModel, uv_layout=None,
                  mesh_formats: tuple[str, ...] = ("obj", "glb"), overlay: bool = True,
                  original: np.ndarray | None = None, stem: str | None = None) -> dict[str, Path]:
    """Write parameters (.npz, .json), meshes and the overlay picture of one image; every file atomically."""
    from flamejax.io import export_mesh, write_json, write_npz

    stem = stem or Path(fit.name).stem
    outdir = Path(outdir)
    record = parameter_record(fit, item)
    written = {"json": write_json(outdir / f"{stem}.json", record)}
    flat = {k: v for k, v in record.items()
            if k not in ("cam", "landmarks", "losses", "image", "status", "init", "mode", "photometric_l1")}
    flat |= {f"cam_{k}": v for k, v in record["cam"].items() if k not in ("convention",)}
    flat |= record["landmarks"]
    flat["vertices"] = fit.vertices
    written["npz"] = write_npz(outdir / f"{stem}.npz", **flat)
    faces = np.asarray(model.faces)
    uv = face_uv = None
    if uv_layout is not None:
        uv = np.asarray(uv_layout.uv).copy()
        uv[:, 1] = 1.0 - uv[:, 1]  # UVLayout stores v downwards (image rows); OBJ wants v up
        face_uv = np.asarray(uv_layout.face_uv_index)
    for fmt in mesh_formats:  # OBJ/PLY keep FLAME's 5023 vertices in order; GLB carries the UVs (split seams)
        with_uv = fmt == "glb"
        written[fmt] = export_mesh(outdir / f"{stem}.{fmt}", fit.vertices, faces,
                                   uv=uv if with_uv else None, face_uv=face_uv if with_uv else None)
    if fit.photometric is not None:
        written |= _write_photometric(outdir, stem, fit, item, faces, uv, face_uv, mesh_formats)
    if overlay:
        from flamejax.overlay import overlay_picture
        from flamejax.io import write_image

        written["overlay"] = write_image(outdir / f"{stem}_overlay.png", overlay_picture(fit, item, model, original))
    return written


def _write_photometric(outdir: Path, stem: str, fit: ImageFit, item, faces, uv, face_uv, mesh_formats) -> dict:
    """Texture PNG, textured meshes and the render beside the photograph."""
    from flamejax.io import export_mesh, write_image

    photo = fit.photometric
    written = {"texture": write_image(outdir / f"{stem}_texture.png", photo.texture)}
    for fmt in mesh_formats:
        if fmt in ("obj", "glb"):
            written[f"textured_{fmt}"] = export_mesh(outdir / f"{stem}_textured.{fmt}", fit.vertices, faces, uv=uv,
                                                     face_uv=face_uv, texture=photo.texture)
    alpha = photo.alpha[..., None]
    composite = item.image * (1.0 - alpha) + photo.render * alpha
    written["render"] = write_image(outdir / f"{stem}_render.png",
                                    np.concatenate([item.image, composite, photo.render], axis=1))
    return written


def summary_line(fit: ImageFit) -> str:
    if not fit.ok:
        return f"{fit.name}: FAILED ({fit.status})"
    ypr = np.asarray(cam.yaw_pitch_roll(fit.result.camera))
    return (f"{fit.name}: ok  NME(inner 51) {100 * float(fit.result.nme):.2f}%  "
            f"yaw {ypr[0]:+.1f} pitch {ypr[1]:+.1f} roll {ypr[2]:+.1f}  fov {float(fit.result.camera.fov_deg):.1f}  "
            f"{fit.seconds:.3f} s/image (share of its batch)")

