"""Identity with 3D truth, end to end: rendered heads -> MediaPipe -> landmark fit -> NoW scan-to-mesh error.

Subjects: the two shared real heads (``../shared/scans``: one registered in FLAME topology, one raw scan) and heads
sampled from the model (identity on 20..60 components, a few expressions). Each is given a skin albedo (tone, lips,
brows, hair, eyes from FLAME's masks), lit by random SH light, rendered at 512² with flamejax's renderer over a
blurred corner of a shared photograph, at yaw up to ±75°, pitch ±30°. The pictures go through ``preprocess``
(MediaPipe) and ``fit_landmarks_batch``; the fitted identity (shape only, neutral) is scored with the NoW protocol
(similarity alignment on 7 landmarks, rigid ICP, distances from the truth's face region to the fitted surface, mm)
and vertex to vertex where the topology is FLAME's. The unfitted mean head is scored the same way beside every fit.

Variants: ``library default`` (``FitConfig()``: visibility and robust landmark weights inside the fit, targets
from MediaPipe's two looks, a second fit leaning to one look where they disagree throughout), ``no look choice``
(without that second fit), ``one look`` (the same on the crop's look alone), ``earlier default`` (no weighting,
one look, the 100x / 10x weaker identity priors the library had before) and ``truth points (oracle)`` (the library
default on the truth's projected inner 51 points: the fit's share of the error), and both kinds of targets
fitted with ``precise_landmarks_config()`` (weak identity prior). Rendered, preprocessed views are
cached in ``--cache`` (keyed by view plan, seed and model), so fitting experiments skip rendering and MediaPipe.

``--single-photometric``: instead, each view fitted alone in photometric mode (the library default landmark fit,
then ``fit_photometric_batch`` with ``PhotometricConfig()``, as ``flamejax fit --mode photometric``, and the same
stage as it was before its landmark weights and yaw limit on the identity), its identity and landmark error
against the landmark fit's and the mean head's, per yaw bin (issue 16 items 2 and 4 in photometric mode).

    python3 -m benchmarks.bench_identity [--quick] [--pictures /tmp/identity] [--cache DIR]
    python3 -m benchmarks.bench_identity --single-photometric
    python3 -m benchmarks.bench_identity --jaw-conventions
    python3 -m benchmarks.bench_identity --beyond-75
    python3 -m benchmarks.bench_identity --fresh-hard 1234

``--jaw-conventions``: instead, the jaw's 17 points of the library's fit and of MediaPipe against the truth's, in
both conventions (the visible outline and the projected 3D contour), on the FLAME-topology heads' views, with the
library's outline rule beside the one it had before (issue 16 item 4).

``--beyond-75``: instead, each subject at 70, 80 and 88° of yaw: how many views MediaPipe finds a face in, the
library's fit on them, and the same fit with the person's silhouette trusted by the rule before (all of FaceMesh's
points inside it, the guessed hidden half of a turned face included).

``--fresh-hard SEED``: instead, hard poses (|yaw| 50-75) of the two scans and six heads sampled with ``SEED``, in
lights, backgrounds and poses drawn with it: views no setting was chosen on, fitted with the library default and
the variants that turn its hard-pose parts off (issue 16 item 4).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time
from pathlib import Path
from typing import NamedTuple

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _scans
from benchmarks._common import RESULTS_DIR, result, save_and_report, separation_auc, shared_photos, table

# Every flamejax name this benchmark uses (repoint here when internals move).
from flamejax.camera import Camera, ndc_to_pixels, project, project_ndc, yaw_pitch_roll
from flamejax.fit import (AMBIENT_SH, FitConfig, FitResult, LandmarkTargets, PhotometricConfig, PhotometricTargets,
                          aligned_vertex_error_mm, fit_landmarks_batch, fit_photometric_batch,
                          WeightingConfig, fit_photometric_same_person, landmark_conventions,
                          precise_landmarks_config, quick_config, stack_targets, two_look_targets)
from flamejax.fit._visibility import facing_cosine, triangle_normals
from flamejax.fitter import QualityConfig, detection_doubt, fit_with_look_choice, look_disagreement_of
from flamejax.flame import FlameParams, barycentric_points, flame_forward, load_flame, load_vertex_masks
from flamejax.perception import (PerceptionError, PreprocessConfig, landmark_face_mask, points_inside, preprocess,
                                 to_68)
from flamejax.perception._mask import MIN_POINTS_INSIDE
from flamejax.render import RasterConfig, load_uv_layout, render_mesh, shade_for_display
from flamejax.rotation import euler_to_matrix, matrix_to_axis_angle

NAME = "identity"
TITLE = "Identity on heads with 3D truth (rendered, MediaPipe, landmark fit, NoW scan-to-mesh)"
N_SHAPE, N_EXPRESSION = 60, 10
SIZE = 512
BINS = (("|yaw| <= 40", 0.0, 40.0), ("|yaw| 50-75", 50.0, 75.0))
"""Bins of the nominal yaw of the view plan (each view is turned a further ±3° at random)."""
NME_LIMIT = 0.08
SEED = 16
NOW_POINTS = 4000
"""Truth face points per subject the NoW distances use (a fixed random subset)."""


# ---------------------------------------------------------------------------------------------- model pieces


def landmarks51(model, vertices):
    emb = model.landmarks
    return barycentric_points(vertices, emb.static_vertices, emb.static_bary)


def neutral_vertices(model, shape) -> np.ndarray:
    """The head of identity ``shape`` with every other parameter zero."""
    params = dataclasses.replace(FlameParams.for_model(model), shape=jnp.asarray(shape, jnp.float32))
    return np.asarray(flame_forward(model, params).vertices)


def identity_error_mm(model, shape, truth_vertices: np.ndarray, rows: np.ndarray) -> float:
    """Mean error (mm) over the vertices ``rows`` of the neutral head of ``shape`` against ``truth_vertices`` (FLAME
    topology) after a similarity alignment on them."""
    return float(aligned_vertex_error_mm(neutral_vertices(model, shape), truth_vertices, rows).mean())


def camera_for(angles_deg, centre: np.ndarray, distance: float) -> Camera:
    rot = euler_to_matrix(jnp.asarray(np.deg2rad(angles_deg), jnp.float32))
    translation = -np.asarray(rot) @ centre + np.array([0.0, 0.0, -distance])
    return Camera(matrix_to_axis_angle(rot), jnp.asarray(translation, jnp.float32), jnp.float32(20.0))


# ---------------------------------------------------------------------------------------------- scoring


def face_crop(truth: np.ndarray, mean_vertices: np.ndarray, face_ids: np.ndarray, rng, max_points: int) -> np.ndarray:
    """Truth points whose nearest mean-head vertex (within 2 cm) is in FLAME's face mask, subsampled."""
    from scipy.spatial import cKDTree

    dist, nearest = cKDTree(mean_vertices).query(truth)
    in_face = np.isin(nearest, face_ids) & (dist < 0.02)
    points = truth[in_face]
    if len(points) > max_points:
        points = points[rng.choice(len(points), max_points, replace=False)]
    return points


def closest_on_mesh(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, candidates: int = 16) -> np.ndarray:
    """Closest surface point for each point (exact among the ``candidates`` faces with the nearest centroids)."""
    from scipy.spatial import cKDTree
    from trimesh.triangles import closest_point

    triangles = vertices[faces]
    _, near = cKDTree(triangles.mean(1)).query(points, k=candidates)
    flat = closest_point(triangles[near.ravel()], np.repeat(points, candidates, axis=0))
    flat = flat.reshape(len(points), candidates, 3)
    best = np.argmin(np.linalg.norm(flat - points[:, None], axis=-1), axis=1)
    return flat[np.arange(len(points)), best]


def now_distances(pred_vertices, pred_seven, faces, truth_points, truth_seven, icp_steps: int = 8) -> np.ndarray:
    """NoW: similarity on 7 landmarks, rigid ICP, distances truth face points -> fitted surface, mm."""
    moved = _scans.apply(_scans.rigid_fit(pred_seven, truth_seven, scale=True), pred_vertices)
    for _ in range(icp_steps):
        closest = closest_on_mesh(truth_points, moved, faces)
        moved = _scans.apply(_scans.rigid_fit(closest, truth_points), moved)
    return 1000.0 * np.linalg.norm(closest_on_mesh(truth_points, moved, faces) - truth_points, axis=1)


def now_scorer(model, heads, mean_v: np.ndarray, face_ids: np.ndarray):
    """``(now_of, shape_now)``: NoW distances (mm) to subject ``h``'s face crop of posed ``vertices`` with their 7
    NoW landmarks, ``now_of(h, vertices, seven)``, and of the neutral head of an identity, ``shape_now(h, shape)``."""
    seven_idx = [i - 17 for i in _scans.NOW_SEVEN]
    crops = [face_crop(head.vertices.astype(np.float64), mean_v, face_ids, np.random.default_rng(0), NOW_POINTS)
             for head in heads]
    head_faces = np.asarray(model.faces)

    def now_of(h_index: int, vertices: np.ndarray, seven: np.ndarray) -> np.ndarray:
        return now_distances(vertices, seven, head_faces, crops[h_index], heads[h_index].landmarks51[seven_idx])

    def shape_now(h_index: int, shape: np.ndarray) -> np.ndarray:
        fitted_v = neutral_vertices(model, shape)
        return now_of(h_index, fitted_v, np.asarray(landmarks51(model, jnp.asarray(fitted_v)))[seven_idx])

    return now_of, shape_now


def mean_head_medians(now_of, mean_v: np.ndarray, mean_l51: np.ndarray, count: int) -> list[float]:
    """The unfitted mean head's NoW median for each of ``count`` subjects (``now_of`` from :func:`now_scorer`)."""
    seven = mean_l51[[i - 17 for i in _scans.NOW_SEVEN]]
    return [float(np.median(now_of(h, mean_v, seven))) for h in range(count)]


def nme_face_box(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean distance over the inner 51 points / sqrt(w h) of the truth's 51-point box (all pixels)."""
    extent = truth.max(0) - truth.min(0)
    return float(np.linalg.norm(predicted - truth, axis=1).mean() / np.sqrt(extent[0] * extent[1]))


def to_original(points_fit_pixels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return points_fit_pixels @ np.asarray(affine)[:, :2].T + np.asarray(affine)[:, 2]


def fitted_nme(lmk68_ndc: np.ndarray, item, truth_px: np.ndarray) -> float:
    """:func:`nme_face_box` of a fit's 68 points (NDC of ``item``'s fit crop) against the truth's inner 51 points
    (pixels of the original picture)."""
    fit_px = (np.asarray(lmk68_ndc)[17:] + 1.0) * item.image.shape[0] / 2.0
    return nme_face_box(to_original(fit_px, item.fit_to_original), truth_px)


# ---------------------------------------------------------------------------------------------- the views


def make_subjects(model, rng, n_flame: int):
    mean_v = neutral_vertices(model, np.zeros(model.num_shape))
    mean_l51 = np.asarray(landmarks51(model, jnp.asarray(mean_v)))
    masks = load_vertex_masks(required=True)
    albedo_of = lambda v, l51: _scans.flame_albedo(v, l51, masks, rng)  # noqa: E731
    faces = np.asarray(model.faces)
    heads = _scans.load_scans(mean_v, mean_l51, albedo_of,
                              lambda v: np.asarray(landmarks51(model, jnp.asarray(v, jnp.float32))))
    for i in range(n_flame):
        active = int(rng.integers(20, N_SHAPE + 1))
        shape = np.zeros(model.num_shape, np.float32)
        shape[:active] = rng.normal(size=active) * 1.0
        v = neutral_vertices(model, shape)
        l51 = np.asarray(landmarks51(model, jnp.asarray(v)))
        heads.append(_scans.Head(f"flame_{i}", "flame", v, faces, l51, albedo_of(v, l51), shape))
    return heads, mean_v, mean_l51, np.asarray(masks["face"])


class ViewSet(NamedTuple):
    """What a run renders: each subject at each nominal yaw (degrees), pitch within ``max_pitch``."""

    yaws: tuple[float, ...]
    max_pitch: float
    sampled_heads: int
    """Sampled FLAME heads beside the two scans."""


FULL_VIEWS = ViewSet((-75.0, -60.0, -40.0, -20.0, 0.0, 20.0, 40.0, 50.0, 65.0), 30.0, 6)
QUICK_VIEWS = ViewSet((-70.0, -40.0, 0.0, 25.0, 55.0), 20.0, 2)


def view_plan(heads, yaws: tuple[float, ...], max_pitch: float, rng, yaw_jitter: float = 3.0) -> list[dict]:
    """Each head at each nominal yaw (signs flipped between subjects: both sides covered), turned a further
    ``yaw_jitter`` at most, pitch within ``max_pitch``; the sampled heads get an expression and an open jaw."""
    plan = []
    for h_index, head in enumerate(heads):
        for yaw in yaws:
            sign = 1.0 if (h_index % 2 == 0) else -1.0
            angles = (sign * yaw + rng.uniform(-yaw_jitter, yaw_jitter), rng.uniform(-max_pitch, max_pitch),
                      rng.uniform(-5, 5))
            expression = np.zeros(N_EXPRESSION, np.float32)
            jaw = 0.0
            if head.kind == "flame":
                expression = (rng.normal(size=N_EXPRESSION) * 0.8).astype(np.float32)
                jaw = float(rng.uniform(0.0, 0.2))
            plan.append(dict(head=h_index, angles=angles, nominal_yaw=sign * yaw, expression=expression, jaw=jaw,
                             distance=float(rng.uniform(0.9, 1.2))))
    return plan


def flame_view_truth(model, head, view: dict) -> tuple[FlameParams, np.ndarray, np.ndarray]:
    """A FLAME-topology head's true parameters in ``view`` (its identity, the view's expression and jaw), its posed
    vertices and their 51 landmarks."""
    base = FlameParams.for_model(model)
    params = FlameParams(jnp.asarray(head.shape), jnp.asarray(view["expression"]), base.head_pose, base.neck_pose,
                         jnp.asarray([view["jaw"], 0.0, 0.0], jnp.float32), base.left_eye_pose, base.right_eye_pose,
                         base.translation)
    posed = np.asarray(flame_forward(model, params).vertices)
    return params, posed, np.asarray(landmarks51(model, jnp.asarray(posed)))


def render_views(model, heads, plan, uv, photos, rng):
    faces = jnp.asarray(model.faces)
    config = RasterConfig(image_size=SIZE)
    flame_render = jax.jit(lambda v, cam, tex, sh: render_mesh(v, faces, cam, uv, tex, sh, config))
    textures = {}
    pictures, truths = [], []
    for view in plan:
        head = heads[view["head"]]
        if head.kind == "flame":
            _, posed, lmk = flame_view_truth(model, head, view)
        else:
            posed, lmk = head.vertices, head.landmarks51
        camera = camera_for(view["angles"], lmk.mean(0), view["distance"])
        sh = jnp.asarray(view["light"] if "light" in view else _scans.random_light(rng, AMBIENT_SH))
        if head.kind == "raw":
            out = render_mesh(jnp.asarray(posed), jnp.asarray(head.faces), camera, None, None, sh,
                              RasterConfig(image_size=SIZE, faces_per_tile=768))
            frag = out.fragments
            albedo = np.einsum("hwkc,hwk->hwc", head.albedo[np.asarray(frag.vertex_index[..., 0, :])],
                               np.asarray(frag.bary[..., 0, :]))
            rgb = np.asarray(out.image) * albedo
        else:
            if view["head"] not in textures:
                texture = _scans.bake_texture(np.asarray(uv.uv), np.asarray(uv.face_uv_index), np.asarray(uv.faces),
                                              head.albedo)
                textures[view["head"]] = jnp.asarray(texture)
            out = flame_render(jnp.asarray(posed, jnp.float32), camera, textures[view["head"]], sh)
            rgb = np.asarray(out.image)
        back = view["background"] if "background" in view else _scans.background(photos, rng, SIZE)
        picture = _scans.composite(rgb, np.asarray(out.alpha), back, rng)
        pictures.append(picture)
        truths.append(np.asarray(project(camera, jnp.asarray(lmk, jnp.float32), SIZE)[0]))
    return pictures, truths


# ---------------------------------------------------------------------------------------------- pictures to look at


def save_overlay(path: Path, item, result_i, model, truth_fit_px: np.ndarray, label: str) -> None:
    """The aligned crop, the fitted mesh over it, targets (red), truth (green), fitted points (blue)."""
    size = item.image.shape[0]
    params = jax.tree.map(lambda a: a, result_i.params)
    v = flame_forward(model, params).vertices
    shaded = np.asarray(shade_for_display(v, jnp.asarray(model.faces), result_i.camera, RasterConfig(image_size=size)))
    crop = item.image.copy()
    overlay = crop * (1 - 0.6 * shaded[..., 3:]) + shaded[..., :3] * 0.6
    panels = [crop, overlay]
    canvas = (np.concatenate(panels, axis=1) * 255).astype(np.uint8).copy()
    fitted = (np.asarray(result_i.landmarks.lmk68) + 1.0) * size / 2.0
    for points, colour in ((item.lmk68[17:], (255, 0, 0)), (truth_fit_px, (0, 255, 0)), (fitted[17:], (0, 0, 255))):
        for x, y in points:
            cv2.circle(canvas, (int(x) + size, int(y)), 1, colour, -1)
    cv2.putText(canvas, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1)
    cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))


# ---------------------------------------------------------------------------------------------- run


def _summary(rows: list[dict], key: str) -> list:
    values = [r[key] for r in rows if r.get(key) is not None]
    return [float(np.median(values)) if values else None, float(np.mean(values)) if values else None]


@dataclasses.dataclass(frozen=True)
class View:
    """What scoring and fitting need of one detected picture (a cached :class:`Preprocessed`'s fields)."""

    image: np.ndarray
    """The aligned fitting crop, float RGB in [0, 1]."""
    points478: np.ndarray
    mirrored478: np.ndarray
    """FaceMesh's look at the mirrored crop (``Preprocessed.mirrored478``), NaN where it found no face."""
    lmk68: np.ndarray
    iris: np.ndarray
    fit_to_original: np.ndarray
    original_to_fit: np.ndarray
    person: np.ndarray
    """``Preprocessed.person`` (selfie segmentation of the crop); zeros where preprocessing did not trust it."""
    detection_score: np.ndarray
    """``Preprocessed.confidence``: the face detector's score of the face, a 0-d array."""
    lost_on_crop: np.ndarray
    """``Preprocessed.lost_on_crop``: FaceMesh found no face again on the aligned crop, a 0-d bool array."""


_VIEW_ARRAYS = [f.name for f in dataclasses.fields(View)]
VIEWS_VERSION = 9
"""Ends every view cache's key: bumped whenever :class:`View` or how its pictures are made changes."""


def detection_doubted(view: View, quality: QualityConfig) -> bool:
    """Whether the library's :func:`detection_doubt` reports this view's detection (its score, FaceMesh losing the
    face on the aligned crop, MediaPipe's two looks disagreeing)."""
    doubt = detection_doubt(float(view.detection_score), quality, bool(view.lost_on_crop), look_disagreement_of(view))
    return doubt is not None


def cache_key(quick: bool, n_sampled: int) -> str:
    """Names the pictures a run would render: view plan, seed, model size, image size, preprocessing (v)."""
    return f"{'quick' if quick else 'full'}_h{n_sampled}_s{N_SHAPE}e{N_EXPRESSION}_{SIZE}px_seed{SEED}_v{VIEWS_VERSION}"


def save_views(folder: Path, pictures, truths, detected, views: list[View], timing: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.stack([getattr(v, name) for v in views]) for name in _VIEW_ARRAYS}
    arrays["image"] = np.round(arrays["image"] * 255).astype(np.uint8)
    np.savez(folder / "views.npz", pictures=np.stack(pictures),
             truths=np.stack(truths), detected=np.asarray(detected), **arrays)
    (folder / "timing.json").write_text(json.dumps(timing))


def load_views(folder: Path):
    with np.load(folder / "views.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["image"] = arrays["image"].astype(np.float32) / 255.0
    views = [View(**{name: arrays[name][i] for name in _VIEW_ARRAYS}) for i in range(len(arrays["detected"]))]
    pictures = list(arrays["pictures"])
    return (pictures, list(arrays["truths"]), [int(i) for i in arrays["detected"]], views,
            json.loads((folder / "timing.json").read_text()))


def pictures_and_targets(model, heads, plan, rng, cache: Path | None, key: str):
    """Rendered pictures, projected truths, detected view ids and their preprocessed views: from ``cache/key`` when
    there, else rendered and run through MediaPipe (and stored there)."""
    if cache is not None and (cache / key / "views.npz").is_file():
        return load_views(cache / key)
    start = time.perf_counter()
    pictures, truths = render_views(model, heads, plan, load_uv_layout(), shared_photos(), rng)
    render_s = time.perf_counter() - start
    start = time.perf_counter()
    views, detected = [], []
    for i, picture in enumerate(pictures):
        try:
            it = preprocess(picture, PreprocessConfig())
        except PerceptionError as error:
            print(f"view {i}: no detection ({error})")
            continue
        mirrored = np.full_like(it.points478, np.nan) if it.mirrored478 is None else it.mirrored478
        person = np.zeros(it.image.shape[:2], np.float32) if it.person is None else it.person
        views.append(View(it.image, it.points478, mirrored, it.lmk68, it.iris, np.asarray(it.fit_to_original),
                          np.asarray(it.original_to_fit), person, np.asarray(it.confidence, np.float32),
                          np.asarray(it.lost_on_crop)))
        detected.append(i)
    timing = {"render s": round(render_s, 1), "preprocess s": round(time.perf_counter() - start, 1)}
    if cache is not None:
        save_views(cache / key, pictures, truths, detected, views, timing)
    return pictures, truths, detected, views, timing


def prepare(quick: bool, sampled_heads: int | None = None, cache: Path | None = None):
    """The model, subjects, view plan and the pictures' targets of a run (rendered or from ``cache``)."""
    rng = np.random.default_rng(SEED)
    model = load_flame(n_shape=N_SHAPE, n_expression=N_EXPRESSION)
    view_set = QUICK_VIEWS if quick else FULL_VIEWS
    n_sampled = sampled_heads or view_set.sampled_heads
    heads, mean_v, mean_l51, face_ids = make_subjects(model, rng, n_sampled)
    plan = view_plan(heads, view_set.yaws, view_set.max_pitch, rng)
    views = pictures_and_targets(model, heads, plan, rng, cache, cache_key(quick, n_sampled))
    return model, (heads, mean_v, mean_l51, face_ids), plan, views


def unweighted(config: FitConfig) -> FitConfig:
    """``config`` without the visibility and robust landmark weights (the fit as it was before them)."""
    return config.replace(weighting=dataclasses.replace(config.weighting, visibility=False, robust=False,
                                                        segments=1))


def earlier_default(config: FitConfig) -> FitConfig:
    """``config`` as the library fitted before issue 16: no weighting, no silhouette, identity priors 100x / 10x
    weaker and as strong at a turned head as at a frontal one."""
    config = with_flat_identity_prior(without_silhouette(unweighted(config)))
    return config.replace(init=dataclasses.replace(config.init, shape_prior=config.init.shape_prior / 100),
                          landmark=dataclasses.replace(config.landmark, shape_l2=config.landmark.shape_l2 / 10))


def without_silhouette(config: FitConfig) -> FitConfig:
    """``config`` without the person's silhouette, neither its outline nor its profile (the library before them)."""
    config = without_profile(config)
    return config.replace(rigid=dataclasses.replace(config.rigid, silhouette_weight=0.0),
                          landmark=dataclasses.replace(config.landmark, silhouette_weight=0.0))


def without_face_silhouette(config: FitConfig) -> FitConfig:
    """``config`` without the face region's vertices held inside the silhouette (the library before it)."""
    return config.replace(landmark=dataclasses.replace(config.landmark, face_silhouette_weight=0.0))


def with_contour_identity(config: FitConfig) -> FitConfig:
    """``config`` whose jaw contour pulls on the identity at every yaw (the library before contour_identity)."""
    return config.replace(landmark=dataclasses.replace(config.landmark, contour_identity=1.0))


def with_flat_identity_prior(config: FitConfig) -> FitConfig:
    """``config`` whose identity prior is as strong at a turned head as at a frontal one (the library before
    shape_l2_turned)."""
    return config.replace(landmark=dataclasses.replace(config.landmark, shape_l2_turned=1.0))


def without_profile(config: FitConfig) -> FitConfig:
    """``config`` without the face region's silhouette term and the profile term (the landmarks' one-sided outline
    alone: the library before the profile)."""
    config = without_face_silhouette(config)
    return config.replace(rigid=dataclasses.replace(config.rigid, profile_weight=0.0),
                          landmark=dataclasses.replace(config.landmark, profile_weight=0.0))


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way of fitting the views: a fit configuration and which targets it fits."""

    config: FitConfig
    two_looks: bool = True
    """Targets from both of MediaPipe's looks (crop and mirrored crop, :func:`two_look_targets`) as the library
    builds them; else from the crop's look alone (the library before)."""
    truth_points: bool = False
    """An oracle instead of MediaPipe: the truth's inner 51 points, projected (``two_looks`` is then unused)."""
    lean: bool = True
    """As the library's :class:`Fitter`: a second fit of the views whose two looks disagree throughout, leaning
    to the look the first fit explains (:func:`fit_with_look_choice`); else the first fit alone."""


def default_variants(config: FitConfig) -> dict[str, Variant]:
    return {"earlier default": Variant(earlier_default(config), two_looks=False),
            "one look": Variant(config, two_looks=False), "library default": Variant(config),
            "no look choice": Variant(config, lean=False),
            "contour shapes identity": Variant(with_contour_identity(config)),
            "flat identity prior": Variant(with_flat_identity_prior(config)),
            "no face silhouette": Variant(without_face_silhouette(config)),
            "no profile": Variant(without_profile(config)),
            "no silhouette": Variant(without_silhouette(config)),
            "truth points (oracle)": Variant(config, truth_points=True),
            "precise-landmarks config": Variant(precise_landmarks_config(config)),
            "truth points, precise-landmarks config": Variant(precise_landmarks_config(config), truth_points=True)}


def view_target_list(items: list[View], two_looks: bool) -> list[LandmarkTargets]:
    """Each view's fitting targets, from one or both of MediaPipe's looks."""
    def one(item: View) -> LandmarkTargets:
        mirrored = item.mirrored478 if two_looks and np.all(np.isfinite(item.mirrored478)) else None
        return two_look_targets(item.points478, mirrored, item.image.shape[0], person=item.person)

    return [one(item) for item in items]


def view_targets(items: list[View], two_looks: bool) -> LandmarkTargets:
    """The batched fitting targets of the views, from one or both of MediaPipe's looks."""
    return stack_targets(view_target_list(items, two_looks))


def fit_views(model, items: list[View], variant: Variant, oracle_targets: LandmarkTargets) -> FitResult:
    """The batched landmark fit of the views a variant makes (with the :class:`Fitter`'s second fit where the
    looks disagree when ``variant.lean``)."""
    if variant.truth_points:
        return fit_landmarks_batch(model, oracle_targets, variant.config)
    def fit(targets: list[LandmarkTargets]) -> FitResult:
        return fit_landmarks_batch(model, stack_targets(targets), variant.config)

    per_view = view_target_list(items, variant.two_looks)
    if not (variant.lean and variant.two_looks):
        return fit(per_view)
    return fit_with_look_choice(items, per_view, fit)[1]


def truth_targets(items: list[View], truths_fit_px: list[np.ndarray]) -> LandmarkTargets:
    """The batched targets of an oracle detector: the truth's inner 51 points (fit pixels) at full weight, no jaw
    contour, MediaPipe or iris points. What the fit makes of perfect points: the rest of its error is the model's,
    the fit's and the camera's, not the detector's."""
    def one(item: View, truth51: np.ndarray) -> LandmarkTargets:
        lmk68 = np.zeros((68, 2), np.float32)
        lmk68[17:] = truth51
        targets = LandmarkTargets.from_pixels(item.points478, lmk68, item.image.shape[0])
        weight68 = np.ones(68, np.float32)
        weight68[:17] = 0.0
        return dataclasses.replace(targets, lmk68_weight=jnp.asarray(weight68),
                                   iris_weight=jnp.zeros_like(targets.iris_weight),
                                   mediapipe_weight=jnp.zeros_like(targets.mediapipe_weight))

    return stack_targets([one(item, truth) for item, truth in zip(items, truths_fit_px)])


def flagged_table(rows: list[dict], names, min_confidence: float) -> list:
    """Per variant: how well ``confidence < min_confidence`` or a doubted detection (:func:`detection_doubt`: the
    detector's score, FaceMesh losing the face on the aligned crop) finds the fits with NME over the limit."""
    body = []
    for name in names:
        failed = np.array([r[f"{name}_nme"] > NME_LIMIT for r in rows])
        flagged = np.array([r[f"{name}_confidence"] < min_confidence or r["detection_doubted"] for r in rows])
        hits = int(np.sum(failed & flagged))
        body.append([name, len(rows), int(failed.sum()), int(flagged.sum()), hits,
                     hits / flagged.sum() if flagged.any() else None, hits / failed.sum() if failed.any() else None])
    return body


SAME_PERSON_YAWS = ((0.0,), (0.0, 40.0), (-40.0, 0.0, 40.0), (-40.0, -20.0, 0.0, 20.0, 40.0))
"""Nominal yaws of the views each same-person fit gets (1 view: the single-image fit of the frontal view)."""


def same_person(model, subjects, plan, detected, items, single_fit, score) -> dict:
    """Identity from 1, 2, 3, 5 views of each subject (:data:`SAME_PERSON_YAWS`, taken from the full view plan),
    fitted jointly with one shared shape (:func:`fit_same_person`, the library API of ``fit --same-person``), then
    refined against the pixels with one identity and one albedo (:func:`fit_photometric_same_person`, ``fit
    --same-person --mode photometric``; one view: the single-image fit refined the same way).

    ``single_fit``: the library default's batched single-image fit of every detected view (gives the 1-view
    row); ``score(subject index, shape) -> NoW median``. Returns {view count: [(subject index, NoW median of the
    landmark fit, of the photometric fit)]}."""
    from flamejax.track import fit_same_person

    uv = load_uv_layout()

    def photometric_shape(picked: list[int], shape, params, camera, used) -> np.ndarray:
        views = [items[k] for k in picked]
        photo = PhotometricTargets(jnp.asarray(np.stack([v.image for v in views]), jnp.float32),
                                   jnp.asarray(np.stack([landmark_face_mask(v.points478, v.image.shape[0])
                                                         for v in views]), jnp.float32),
                                   view_targets(views, True))
        return np.asarray(fit_photometric_same_person(model, uv, photo, shape, params, camera, used=used).shape)

    scores = {len(yaws): [] for yaws in SAME_PERSON_YAWS}
    for h_index in range(len(subjects)):
        by_yaw = {}
        for k, view_index in enumerate(detected):
            view = plan[view_index]
            if view["head"] == h_index and abs(view["angles"][0]) <= 43.5:
                by_yaw[5.0 * round(view["angles"][0] / 5.0) if abs(view["angles"][0]) > 10 else 0.0] = k
        for yaws in SAME_PERSON_YAWS:
            picked = [min(by_yaw, key=lambda y: abs(y - wanted)) for wanted in yaws] if by_yaw else []
            picked = [by_yaw[y] for y, wanted in zip(picked, yaws) if abs(y - wanted) <= 8.0]
            if len(picked) != len(yaws):
                continue
            if len(picked) == 1:
                row = jax.tree.map(lambda a: a[picked[0]:picked[0] + 1], (single_fit.params, single_fit.camera))
                shape = single_fit.params.shape[picked[0]]
                refined = photometric_shape(picked, shape, *row, np.ones(1, bool))
            else:
                joint = fit_same_person(model, view_targets([items[k] for k in picked], True))
                shape = joint.shape
                refined = photometric_shape(picked, shape, joint.params, joint.camera,
                                            np.array([s == "ok" for s in joint.status]))
            scores[len(yaws)].append((h_index, score(h_index, np.asarray(shape)), score(h_index, refined)))
    return scores


SINGLE_PHOTOMETRIC = {"photometric before (unweighted landmarks, identity free at any yaw)": PhotometricConfig(
                          weighting=WeightingConfig(visibility=False, robust=False), identity_max_yaw=180.0,
                          shape_start=0),
                      "photometric, per-texel albedo moving from texel_start (bake_texels False)": PhotometricConfig(
                          bake_texels=False),
                      "photometric (PhotometricConfig())": PhotometricConfig()}
"""``--single-photometric``'s photometric stages: the library's, the same with the per-texel albedo fitted with the
geometry (before ``PhotometricConfig.bake_texels``), and as it was before ``weighting`` and ``identity_max_yaw``."""


def run_single_photometric(cache: Path | None, batch: int = 8) -> dict:
    """``--single-photometric`` (module docstring): per view, NoW median and inner-51 NME of the landmark fit and
    of each stage in :data:`SINGLE_PHOTOMETRIC` after it, in both yaw bins."""
    model, (heads, mean_v, mean_l51, face_ids), plan, views = prepare(False, None, cache)
    _, truths, detected, items, _ = views
    now_of, shape_now = now_scorer(model, heads, mean_v, face_ids)
    mean_head = mean_head_medians(now_of, mean_v, mean_l51, len(heads))
    fits = ["landmark mode (FitConfig())", *SINGLE_PHOTOMETRIC]
    uv, rows, start = load_uv_layout(), [], time.perf_counter()

    def fit(targets: list[LandmarkTargets]) -> FitResult:
        return fit_landmarks_batch(model, stack_targets(targets), FitConfig())

    for bin_name, low, high in BINS:
        views_in_bin = [k for k, v in enumerate(detected) if low <= abs(plan[v]["nominal_yaw"]) <= high]
        for first in range(0, len(views_in_bin), batch):  # one batch size: one compiled program
            picked = views_in_bin[first:first + batch]
            chosen = [items[k] for k in picked + [picked[-1]] * (batch - len(picked))]
            targets, landmark = fit_with_look_choice(chosen, view_target_list(chosen, True), fit)
            photo = PhotometricTargets(jnp.asarray(np.stack([v.image for v in chosen]), jnp.float32),
                                       jnp.asarray(np.stack([landmark_face_mask(v.points478, v.image.shape[0])
                                                             for v in chosen]), jnp.float32), stack_targets(targets))
            results = [landmark] + [fit_photometric_batch(model, uv, photo, landmark, config)
                                    for config in SINGLE_PHOTOMETRIC.values()]
            for j, k in enumerate(picked):
                v = detected[k]
                h = plan[v]["head"]
                nme = [fitted_nme(r.landmarks.lmk68[j], items[k], truths[v]) for r in results]
                rows.append(dict(bin=bin_name, subject=heads[h].name, yaw=float(plan[v]["angles"][0]),
                                 mean_head=mean_head[h], nme=nme,
                                 now=[float(np.median(shape_now(h, np.asarray(r.params.shape[j])))) for r in results]))
    seconds = time.perf_counter() - start
    tables = []
    for bin_name, _, _ in BINS:
        in_bin = [r for r in rows if r["bin"] == bin_name]
        per_fit = lambda sel: [float(np.median([r["now"][i] for r in sel])) for i in range(len(fits))]  # noqa: E731
        body = [[name, len(sel), float(np.median([r["mean_head"] for r in sel])), *per_fit(sel)]
                for name in [h.name for h in heads] if (sel := [r for r in in_bin if r["subject"] == name])]
        mean_median = float(np.median([r["mean_head"] for r in in_bin]))
        medians = per_fit(in_bin)
        body.append(["all views", len(in_bin), mean_median, *medians])
        body.append(["ratio of medians to the mean head", None, 1.0, *(m / mean_median for m in medians)])
        nme = np.array([r["nme"] for r in in_bin]) * 100.0
        body.append(["NME median % (inner 51, face box)", None, None, *np.median(nme, axis=0).tolist()])
        body.append(["NME max %", None, None, *nme.max(axis=0).tolist()])
        body.append([f"NME > {100 * NME_LIMIT:g}%", None, None, *(nme > 100 * NME_LIMIT).sum(axis=0).tolist()])
        tables.append(table(f"One photograph at a time, nominal {bin_name}: NoW median of per-view medians, mm",
                            ["subject", "views", "mean head (unfitted)", *fits], body))
    settings = {"views": len(rows), "model": f"test model, {N_SHAPE} identity / {N_EXPRESSION} expression",
                "photometric": "fit_photometric_batch after the library's landmark fit, batch 8, landmark face mask",
                "fit s (all fits, incl. compile)": round(seconds, 1)}
    note = ("NoW as in the identity section (similarity on 7 landmarks, rigid ICP, truth face crop to the fitted "
            "neutral surface). Targets: MediaPipe's two looks and the person's silhouette, with the library's "
            "second fit where the looks disagree (fit_with_look_choice); the photometric stages start from that "
            "fit and its targets. NME as in the identity section.")
    return result(f"{NAME}_single_photometric", "Single-photograph identity in photometric mode (rendered heads, NoW)",
                  "full", settings, tables, data={"rows": rows}, note=note)


BEYOND_YAWS = (70.0, 80.0, 88.0)
"""``--beyond-75``: nominal yaws of each subject's views (signs alternating between subjects), pitch within ±15°."""


def silhouette_trusted_as_before(item: View) -> View:
    """``item`` with the person's silhouette dropped where the rule before issue 16's profile fix dropped it: when it
    left more than 5 % of all FaceMesh's points out, the guessed hidden half of a turned face included."""
    if item.person.max() > 0 and points_inside(item.person, item.points478) < MIN_POINTS_INSIDE:
        return dataclasses.replace(item, person=np.zeros_like(item.person))
    return item


def run_beyond_75(cache: Path | None) -> dict:
    """``--beyond-75`` (module docstring): views at 70, 80, 88° of yaw; how many MediaPipe finds, and the library's
    fit on them beside the one that trusted the person's silhouette as before."""
    rng = np.random.default_rng(SEED + 75)
    model = load_flame(n_shape=N_SHAPE, n_expression=N_EXPRESSION)
    heads, *_ = make_subjects(model, np.random.default_rng(SEED), 6)
    plan = view_plan(heads, BEYOND_YAWS, 15.0, rng, yaw_jitter=0.0)
    key = f"beyond75_h6_s{N_SHAPE}e{N_EXPRESSION}_{SIZE}px_seed{SEED}_v{VIEWS_VERSION}"
    _, truths, detected, items, timing = pictures_and_targets(model, heads, plan, rng, cache, key)
    trusted_before = [silhouette_trusted_as_before(it) for it in items]
    config, start = FitConfig(), time.perf_counter()
    fits = {"library default": fit_views(model, items, Variant(config), None),
            "silhouette trusted as before": fit_views(model, trusted_before, Variant(config), None)}
    fits = {name: jax.tree.map(np.asarray, res) for name, res in fits.items()}
    seconds = time.perf_counter() - start
    quality = QualityConfig()
    rows = []
    for k, v in enumerate(detected):
        row = dict(view=v, subject=heads[plan[v]["head"]].name, yaw=float(plan[v]["angles"][0]),
                   detection_score=float(items[k].detection_score), lost_on_crop=bool(items[k].lost_on_crop),
                   doubted=detection_doubted(items[k], quality),
                   nominal=abs(plan[v]["nominal_yaw"]), trusted=bool(items[k].person.max() > 0),
                   trusted_before=bool(trusted_before[k].person.max() > 0),
                   nme_detector=nme_face_box(to_original(items[k].lmk68[17:], items[k].fit_to_original), truths[v]))
        for name, res in fits.items():
            fitted_yaw = float(yaw_pitch_roll(jax.tree.map(lambda a: a[k], res.camera))[0])
            row[name] = dict(nme=fitted_nme(res.landmarks.lmk68[k], items[k], truths[v]),
                             confidence=float(res.confidence[k]), yaw_short=abs(row["yaw"]) - abs(fitted_yaw))
        rows.append(row)
    body = []
    for yaw in BEYOND_YAWS:
        in_bin = [r for r in rows if r["nominal"] == yaw]
        views = sum(abs(view["nominal_yaw"]) == yaw for view in plan)
        mediapipe = [100 * r["nme_detector"] for r in in_bin]
        scores = [r["detection_score"] for r in in_bin]
        body.append([f"{yaw:g}", views, len(in_bin), float(min(scores)) if in_bin else None,
                     sum(r["lost_on_crop"] for r in in_bin), sum(r["trusted_before"] for r in in_bin),
                     sum(r["trusted"] for r in in_bin), float(np.median(mediapipe)) if in_bin else None])
        doubted = np.array([r["doubted"] for r in in_bin], bool)
        for name in fits:
            nme = np.array([100 * r[name]["nme"] for r in in_bin])
            flagged = doubted | np.array([r[name]["confidence"] < quality.min_confidence for r in in_bin], bool)
            over = nme > 100 * NME_LIMIT
            body[-1] += [float(np.median(nme)) if in_bin else None, int(over.sum()), int((flagged & over).sum()),
                         int((flagged & ~over).sum()),
                         float(np.median([r[name]["yaw_short"] for r in in_bin])) if in_bin else None]
    columns = ["nominal |yaw|", "views", "MediaPipe found a face", "lowest detector's score",
               "FaceMesh lost the face on the aligned crop", "silhouette trusted before", "silhouette trusted now",
               "MediaPipe NME median %"]
    for name in fits:
        columns += [f"{name}: NME median %", f"{name}: NME > {100 * NME_LIMIT:g}%",
                    f"{name}: of those flagged suspect", f"{name}: flagged, NME ≤ {100 * NME_LIMIT:g}%",
                    f"{name}: fitted |yaw| short of the truth, median °"]
    settings = {"subjects": len(heads), "views": len(plan), "detected": len(detected), **timing,
                "fit s (both variants, incl. compile)": round(seconds, 1)}
    note = ("Views rendered as in the identity section, each subject at 70, 80 and 88 degrees of yaw (pitch within "
            "15). NME: inner 51 points against the truth's projected 3D points, over the truth's face box. "
            "silhouette trusted as before: the person's silhouette dropped when it left more than 5 % of all "
            "FaceMesh's points out (the rule before: at a turned face FaceMesh's guessed hidden half sticks out past "
            "the profile); now only the near half and the midline count beyond 40 degrees or so. Flagged suspect: "
            f"confidence < {quality.min_confidence}, or the detection doubted (detection_doubt: the face detector's "
            f"score < {quality.min_detection_score}, FaceMesh finding no face again on the aligned crop, or "
            "MediaPipe's two looks disagreeing).")
    return result(f"{NAME}_beyond_75", "Beyond 75 degrees of yaw: what MediaPipe finds and the fit makes of it",
                  "full", settings, [table("Views at 70-88 degrees of yaw", columns, body)], data={"rows": rows},
                  note=note)


def _edge_on_outline(camera: Camera, rows: jax.Array, normals: jax.Array) -> jax.Array:
    """The outline rule before 2026-12-02, for the side-by-side columns: each jaw point's candidate seen most
    edge-on (facing cosine nearest 0, hidden ones penalised)."""
    cosines = jax.vmap(lambda p, n: facing_cosine(camera, p, n))(rows, normals)
    best = jnp.argmin(jnp.where(cosines < 0.0, -4.0 * cosines, cosines), axis=0)
    return jnp.take_along_axis(rows, best[None, :, None], axis=0)[0]


def _jaw_conventions(model, params: FlameParams, camera: Camera) -> dict[str, jax.Array]:
    """The 17 jaw points, NDC: the outline convention (the library's rule and the rule before) and the projected
    3D contour."""
    emb = model.landmarks
    vertices = flame_forward(model, params).vertices
    rows = barycentric_points(vertices, emb.contour_vertices, emb.contour_bary)
    normals = triangle_normals(vertices, emb.contour_vertices)
    conventions = landmark_conventions(model, params, camera)
    return {"outline": conventions.outline68[:17], "projected": conventions.projected68[:17],
            "outline, edge-on rule": project_ndc(camera, _edge_on_outline(camera, rows, normals))}


def run_jaw_conventions(cache: Path | None, batch: int = 8) -> dict:
    """``--jaw-conventions`` (module docstring): the 17 jaw points of the library's fit and of MediaPipe against
    the truth's, in both conventions, on the views of the FLAME-topology heads (their true parameters are known)."""
    model, (heads, *_), plan, views = prepare(False, None, cache)
    _, truths, detected, items, _ = views
    conventions = jax.jit(jax.vmap(lambda p, c: _jaw_conventions(model, p, c)))
    flame_views = [k for k, v in enumerate(detected) if heads[plan[v]["head"]].kind == "flame"]
    rows, start = [], time.perf_counter()

    def fit(targets: list[LandmarkTargets]) -> FitResult:
        return fit_landmarks_batch(model, stack_targets(targets), FitConfig())

    for first in range(0, len(flame_views), batch):
        picked = flame_views[first:first + batch]
        chosen = [items[k] for k in picked + [picked[-1]] * (batch - len(picked))]
        _, fitted = fit_with_look_choice(chosen, view_target_list(chosen, True), fit)
        truth_params, truth_cameras = [], []
        for k in picked + [picked[-1]] * (batch - len(picked)):
            view = plan[detected[k]]
            params, _, lmk = flame_view_truth(model, heads[view["head"]], view)
            truth_params.append(params)
            truth_cameras.append(camera_for(view["angles"], lmk.mean(0), view["distance"]))
        stack = lambda trees: jax.tree.map(lambda *a: jnp.stack(a), *trees)  # noqa: E731
        truth = jax.tree.map(np.asarray, conventions(stack(truth_params), stack(truth_cameras)))
        fit_jaw = jax.tree.map(np.asarray, conventions(fitted.params, fitted.camera))
        for j, k in enumerate(picked):
            v, item = detected[k], items[k]
            size = item.image.shape[0]
            in_pixels = lambda ndc: ndc_to_pixels(ndc, SIZE)  # noqa: E731
            in_original = lambda ndc: to_original((ndc + 1.0) * size / 2.0, item.fit_to_original)  # noqa: E731
            extent = truths[v].max(0) - truths[v].min(0)
            norm = float(np.sqrt(extent[0] * extent[1]))
            error = lambda a, b: float(np.linalg.norm(a - b, axis=-1).mean() / norm)  # noqa: E731
            row = {"view": v, "yaw": plan[v]["nominal_yaw"]}
            for name in ("outline", "projected", "outline, edge-on rule"):
                row[f"fit {name}"] = error(in_original(fit_jaw[name][j]), in_pixels(truth[name][j]))
            row["fit jaw as fitted (FLAME's dynamic contour), against the outline"] = error(
                in_original(np.asarray(fitted.landmarks.lmk68[j, :17])), in_pixels(truth["outline"][j]))
            mediapipe = to_original(np.asarray(item.lmk68[:17]), item.fit_to_original)
            row["MediaPipe's 68 conversion, against the outline"] = error(mediapipe, in_pixels(truth["outline"][j]))
            row["MediaPipe's 68 conversion, against the projected contour"] = error(
                mediapipe, in_pixels(truth["projected"][j]))
            row["fit inner 51 (for scale)"] = error(in_original(np.asarray(fitted.landmarks.lmk68[j, 17:])),
                                                     truths[v])
            rows.append(row)
    seconds = time.perf_counter() - start
    measures = [key for key in rows[0] if key not in ("view", "yaw")]
    tables = []
    for label, low, high in BINS:
        chosen = [r for r in rows if low <= abs(r["yaw"]) <= high]
        body = [[m, len(chosen), *(float(f(np.asarray([r[m] for r in chosen]))) * 100
                                   for f in (np.median, np.mean, np.max))] for m in measures]
        tables.append(table(f"{label}: mean error of the 17 jaw points, % of the truth's face box",
                            ["points", "views", "median", "mean", "max"], body))
    settings = {"views": len(rows), "heads": "the registered scan and the sampled model heads (FLAME topology)",
                "fit": "FitConfig() with the library's look choice (fit_with_look_choice)",
                "s (all fits, incl. compile)": round(seconds, 1)}
    note = ("Truth: the 68 points of the true head under the true camera in both conventions "
            "(landmark_conventions): outline (300-W: the jaw on the head's visible outline) and projected "
            "(AFLW2000-3D: the fixed 3D contour projected, hidden or not). Each fit is scored against the truth in "
            "the same convention, the edge-on rule (the library's outline before) against the truth under that rule. "
            "Error: mean distance of the 17 jaw points over sqrt(w h) of the truth's inner-51 box, per view; "
            "the fit's inner 51 points are shown for scale.")
    return result(f"{NAME}_jaw_conventions", "The jaw's 17 points in both conventions (rendered heads, FLAME "
                  "topology)", "full", settings, tables, data={"rows": rows}, note=note)


def run(quick: bool, pictures_dir: Path | None = None, sampled_heads: int | None = None,
        short_fit: bool | None = None, cache: Path | None = None,
        variants: dict[str, Variant] | None = None, same_person_views: bool = False) -> dict:
    """``sampled_heads`` (default 2 quick, 6 full) model heads beside the scans; ``short_fit`` (default: quick)
    fits with ``quick_config()`` instead of ``FitConfig()``; ``cache``: folder of rendered, preprocessed views;
    ``same_person_views``: also fit 2, 3, 5 views of each subject jointly (full view plan only)."""
    short_fit = quick if short_fit is None else short_fit
    config = quick_config() if short_fit else FitConfig()
    model, (heads, mean_v, mean_l51, face_ids), plan, views = prepare(quick, sampled_heads, cache)
    pictures, truths, detected, items, timing = views
    oracle_targets = truth_targets(items, [to_original(truths[i], item.original_to_fit)
                                           for i, item in zip(detected, items)])
    variants = variants or default_variants(config)
    start = time.perf_counter()
    fits = {name: jax.tree.map(np.asarray, fit_views(model, items, v, oracle_targets))
            for name, v in variants.items()}
    fit_s = (time.perf_counter() - start) / len(variants)
    confidences = {name: res.confidence for name, res in fits.items()}
    variants = fits

    now_of, shape_now = now_scorer(model, heads, mean_v, face_ids)
    mean_seven = mean_l51[[i - 17 for i in _scans.NOW_SEVEN]]
    rows, mean_scores = [], {}
    for k, view_index in enumerate(detected):
        view, head, item = plan[view_index], heads[plan[view_index]["head"]], items[k]
        truth_px = truths[view_index]
        row = dict(subject=head.name, kind=head.kind, yaw=float(view["angles"][0]), pitch=float(view["angles"][1]),
                   nominal_yaw=float(view["nominal_yaw"]),
                   detection_doubted=detection_doubted(item, QualityConfig()),
                   nme_detector=nme_face_box(to_original(item.lmk68[17:], item.fit_to_original), truth_px))
        if np.all(np.isfinite(item.mirrored478)):
            mean68 = to_68((item.points478 + item.mirrored478) / 2)
            row["nme_detector_two_looks"] = nme_face_box(to_original(mean68[17:], item.fit_to_original), truth_px)
        if view["head"] not in mean_scores:  # the mean head is the same guess for every view of a subject
            mean_d = now_of(view["head"], mean_v, mean_seven)
            mean_scores[view["head"]] = float(np.median(mean_d)), float(mean_d.mean())
        row["mean_head_now_median"], row["mean_head_now_mean"] = mean_scores[view["head"]]
        if head.kind != "raw":
            row["mean_head_v2v"] = float(aligned_vertex_error_mm(mean_v, head.vertices, face_ids).mean())
        for name, res in variants.items():
            shape = res.params.shape[k]
            fitted_v = neutral_vertices(model, shape)
            d = shape_now(view["head"], shape)
            row[f"{name}_now_median"], row[f"{name}_now_mean"] = float(np.median(d)), float(d.mean())
            row[f"{name}_nme"] = fitted_nme(res.landmarks.lmk68[k], item, truth_px)
            row[f"{name}_status"] = int(res.status[k])
            if head.kind != "raw":
                row[f"{name}_v2v"] = float(aligned_vertex_error_mm(fitted_v, head.vertices, face_ids).mean())
            if head.shape is not None:
                row[f"{name}_shape_corr"] = float(np.corrcoef(shape, head.shape)[0, 1])
            row[f"{name}_confidence"] = float(confidences[name][k])
            fitted_yaw = float(yaw_pitch_roll(jax.tree.map(lambda a: a[k], res.camera))[0])
            row[f"{name}_yaw_short"] = abs(row["yaw"]) - abs(fitted_yaw)
        rows.append(row)
        if pictures_dir is not None:
            pictures_dir.mkdir(parents=True, exist_ok=True)
            stem = f"{k:02d}_{head.name}_yaw{row['yaw']:+.0f}"
            cv2.imwrite(str(pictures_dir / f"{stem}_render.png"), cv2.cvtColor(pictures[view_index], cv2.COLOR_RGB2BGR))
            truth_fit_px = to_original(truth_px, item.original_to_fit)
            for name, res in variants.items():
                label = f"{name} NME {100 * row[f'{name}_nme']:.1f}% NoW {row[f'{name}_now_median']:.2f}mm"
                save_overlay(pictures_dir / f"{stem}_{re.sub('[^a-z0-9+]+', '_', name)}.png", item,
                             jax.tree.map(lambda a: a[k], res), model, truth_fit_px, label)

    tables, verdicts = [], {}
    for label, lo, hi in BINS:
        sel = [r for r in rows if lo <= abs(r["nominal_yaw"]) <= hi]
        body = [["mean head (unfitted)", len(sel), *_summary(sel, "mean_head_now_median"),
                 *_summary(sel, "mean_head_now_mean"), _summary(sel, "mean_head_v2v")[1], None, None, None, None,
                 None]]
        for name in variants:
            nmes = [r[f"{name}_nme"] for r in sel]
            body.append([name, len(sel), *_summary(sel, f"{name}_now_median"), *_summary(sel, f"{name}_now_mean"),
                         _summary(sel, f"{name}_v2v")[1], float(np.median(nmes)) * 100 if nmes else None,
                         float(np.max(nmes)) * 100 if nmes else None, sum(n > NME_LIMIT for n in nmes),
                         _summary(sel, f"{name}_confidence")[0], _summary(sel, f"{name}_yaw_short")[0]])
        for label_det, key in (("MediaPipe points themselves", "nme_detector"),
                               ("MediaPipe, mean of the two looks", "nme_detector_two_looks")):
            det = [r[key] for r in sel if key in r]
            body.append([label_det, len(det), None, None, None, None, None,
                         float(np.median(det)) * 100 if det else None, float(np.max(det)) * 100 if det else None,
                         sum(n > NME_LIMIT for n in det), None, None])
        missed = sum(lo <= abs(v["nominal_yaw"]) <= hi for i, v in enumerate(plan) if i not in detected)
        tables.append(table(f"{label}: identity (mm) and landmark error (% of face box); {missed} more views "
                            f"without a MediaPipe detection",
                            ["fit", "images", "NoW median of medians", "NoW mean of medians", "NoW median of means",
                             "NoW mean of means", "V2V mean (FLAME topology)", "NME median %", "NME max %",
                             f"NME > {NME_LIMIT:.0%}", "confidence median", "fitted |yaw| short of the truth, "
                             "median °"], body))
        mean_med = _summary(sel, "mean_head_now_median")[0]
        for name in variants:
            fit_med = _summary(sel, f"{name}_now_median")[0]
            nmes = [r[f"{name}_nme"] for r in sel]
            ratio = None if not mean_med or fit_med is None else fit_med / mean_med
            verdicts[f"{label} {name}"] = dict(ratio_to_mean_head=ratio, max_nme=max(nmes) if nmes else None)
    min_confidence = QualityConfig().min_confidence
    hard = [r for r in rows if BINS[1][1] <= abs(r["nominal_yaw"]) <= BINS[1][2]]
    for label, sel in (("all views", rows), (BINS[1][0], hard)):
        tables.append(table(f"{label}: does a low confidence (< QualityConfig.min_confidence = {min_confidence}) "
                            f"or a doubted detection flag the fits with NME > {NME_LIMIT:.0%}?",
                            ["fit", "images", f"NME > {NME_LIMIT:.0%}", "flagged", "flagged and over",
                             "precision", "recall"], flagged_table(sel, variants, min_confidence)))
    per_subject = []
    for head in heads:
        sel = [r for r in rows if r["subject"] == head.name]
        per_subject.append([head.name, head.kind, len(sel), _summary(sel, "mean_head_now_median")[0],
                            *(_summary(sel, f"{name}_now_median")[0] for name in variants),
                            *(_summary(sel, f"{name}_shape_corr")[1] for name in variants)])
    tables.append(table("Per subject: NoW median of per-image medians, mm; mean correlation of the fitted identity "
                        "coefficients with the truth's (sampled heads)",
                        ["subject", "kind", "images", "mean head", *variants, *(f"corr {n}" for n in variants)],
                        per_subject))
    same_person_scores = {}
    if same_person_views:
        start = time.perf_counter()
        same_person_scores = same_person(model, heads, plan, detected, items, fits["library default"],
                                         lambda h, shape: float(np.median(shape_now(h, shape))))
        same_person_s = round(time.perf_counter() - start, 1)
        body = []
        for count, scored in same_person_scores.items():
            mean_head = [mean_scores[h][0] for h, *_ in scored]
            row = [count, len(scored), float(np.median(mean_head)) if scored else None]
            for column in (1, 2):
                fitted = [entry[column] for entry in scored]
                ratios = [f / m for f, m in zip(fitted, mean_head)]
                row += ([float(np.median(fitted)), float(np.median(fitted) / np.median(mean_head)),
                         float(np.median(ratios)), float(np.max(ratios))] if scored else [None] * 4)
            body.append(row)
        columns = [f"{what}: {stat}" for what in ("landmark", "photometric")
                   for stat in ("median over subjects", "ratio of medians", "median of per-subject ratios",
                                "worst per-subject ratio")]
        tables.append(table(f"Several photographs of one person (library default targets, yaw −40…+40; landmark: "
                            f"fit_same_person with its default SAME_PERSON; photometric: then "
                            f"fit_photometric_same_person, one identity and one albedo, PhotometricConfig(); "
                            f"{same_person_s} s for all): NoW median, mm",
                            ["views", "subjects", "mean head (median over subjects)", *columns], body))
    settings = {"subjects": f"{len(heads)} ({', '.join(h.name for h in heads)})", "views": len(plan),
                "detected": len(detected), "model": f"test model, {N_SHAPE} identity / {N_EXPRESSION} expression",
                "fit config": "quick_config()" if short_fit else "FitConfig()", "image": f"{SIZE}² render, FOV 20°",
                **timing,
                "fit s per variant (incl. compile)": round(fit_s, 1)}
    note = ("Identity is the fitted shape on a neutral face (expression and jaw zero) against the neutral truth. "
            "NoW: per image the median and mean of truth-to-fit distances over the truth's face region (points whose "
            "nearest mean-head vertex is in FLAME's face mask), after a similarity on 7 landmarks and 8 rigid ICP "
            "steps; then the median / mean over images. The two real scans are not neutral (the registered one has "
            "its mouth open): their error includes that expression, for the mean head and the fits alike. NME: inner "
            "51 points, fit (or MediaPipe's 68 conversion) against the truth's projected 3D points (AFLW2000-3D "
            "convention: hidden points where they are), over sqrt(w h) of the truth's 51-point box. "
            "library default: FitConfig() (its landmark stage re-weights the points at the pose it has reached: "
            "visibility x Geman-McClure IRLS, FitConfig.weighting) on targets from MediaPipe's two looks, the crop "
            "and its mirror image (each point at their mean, weighted by their agreement: two_look_targets), the "
            "fitted points held inside the person's silhouette (MediaPipe's selfie segmentation, Preprocessed.person; "
            "silhouette_weight), and so are the vertices of FLAME's face region in stage 2 (face_silhouette_weight), "
            "and, at strong yaw, reaching the silhouette's edge on the side the face turns to "
            "(LandmarkTargets.profile, profile_weight); where the two looks disagree throughout (look_disagreement "
            "above LOOK_DISAGREEMENT = 0.08: one look folded the far half of the face), a second fit to targets "
            "leaning to the look the first fit explains (fit_with_look_choice, as the library's Fitter does); "
            "no look choice: without that second fit (the library before); contour shapes identity: the jaw "
            "contour's term pulls on the identity at every yaw (LandmarkStageConfig.contour_identity 1, the library "
            "before; by default it does not below 40 degrees of yaw); flat identity prior: the identity prior as "
            "strong at a turned head as at a frontal one (the library before; by default it rises to 4x from 45 to "
            "60 degrees of yaw, LandmarkStageConfig.shape_l2_turned); no face silhouette: without the face "
            "region's vertices held inside (the library before); no profile: without that and the profile term; "
            "no silhouette: without any of the silhouette's terms; "
            "one look: the same fit on the crop's look alone (the library before); earlier default: one look, no "
            "weighting, the identity priors of before (init 2e-4, landmark stage 0.05 at any yaw). "
            "truth points (oracle): the library default fitted to the truth's projected inner 51 points alone "
            "(no jaw contour, MediaPipe or iris points): what is left is the fit's and the model's error, not the "
            "detector's. precise-landmarks config: precise_landmarks_config() (identity priors 16x / 10x weaker, "
            "stage 2 twice as long), on MediaPipe's two looks and on the truth points. confidence: "
            "FitResult.confidence; a fit is flagged when it is below QualityConfig.min_confidence, or when its "
            "detection is doubted (detection_doubt: the face detector's score below QualityConfig.min_detection_score, "
            "or FaceMesh finding no face again on the aligned crop, Preprocessed.lost_on_crop); the record's verdict "
            "then says so. Bins are of the view plan's nominal yaw (each view is turned a further ±3° at "
            "random); fitted |yaw| short of the truth: |true yaw| - |fitted yaw|, degrees (positive: the fit turned "
            "the head less than it is).")
    return result(NAME, TITLE, "quick" if quick else "full", settings, tables,
                  data={"rows": rows, "verdicts": verdicts, "same_person": same_person_scores}, note=note)


FRESH_HARD_YAWS = (50.0, 52.0, 55.0, 58.0, 60.0, 62.0, 65.0, 68.0, 70.0, 72.0, 75.0)
"""``--fresh-hard``: nominal yaws of each subject's views (signs alternating between subjects), pitch within ±30°."""


def run_fresh_hard(seed: int, cache: Path | None) -> dict:
    """``--fresh-hard SEED`` (module docstring): a draw of hard-pose views no setting was chosen on (the two scans
    and six heads sampled with ``seed``, each at :data:`FRESH_HARD_YAWS`), fitted with the library default and
    the variants that turn its hard-pose parts off; identity and landmark error beside the mean head's."""
    rng = np.random.default_rng(seed)
    model = load_flame(n_shape=N_SHAPE, n_expression=N_EXPRESSION)
    heads, mean_v, mean_l51, face_ids = make_subjects(model, np.random.default_rng(seed), 6)
    plan = view_plan(heads, FRESH_HARD_YAWS, 30.0, rng)
    key = f"hard_h6_s{N_SHAPE}e{N_EXPRESSION}_{SIZE}px_seed{seed}_v{VIEWS_VERSION}"
    _, truths, detected, items, timing = pictures_and_targets(model, heads, plan, rng, cache, key)
    oracle_targets = truth_targets(items, [to_original(truths[i], item.original_to_fit)
                                           for i, item in zip(detected, items)])
    config, start = FitConfig(), time.perf_counter()
    kept = ("library default", "no look choice", "flat identity prior", "no profile", "no silhouette",
            "truth points (oracle)")
    variants = {name: v for name, v in default_variants(config).items() if name in kept}
    fits = {name: jax.tree.map(np.asarray, fit_views(model, items, v, oracle_targets)) for name, v in variants.items()}
    seconds = time.perf_counter() - start
    now_of, shape_now = now_scorer(model, heads, mean_v, face_ids)
    mean_head = mean_head_medians(now_of, mean_v, mean_l51, len(heads))
    quality = QualityConfig()
    rows = []
    for k, v in enumerate(detected):
        h = plan[v]["head"]
        doubted = detection_doubted(items[k], quality)
        row = dict(view=v, subject=heads[h].name, yaw=float(plan[v]["angles"][0]), mean_head=mean_head[h])
        for name, res in fits.items():
            row[name] = dict(nme=fitted_nme(res.landmarks.lmk68[k], items[k], truths[v]),
                             now=float(np.median(shape_now(h, np.asarray(res.params.shape[k])))),
                             flagged=bool(doubted or res.confidence[k] < quality.min_confidence),
                             confidence=float(res.confidence[k]))
        rows.append(row)
    mean_median = float(np.median([r["mean_head"] for r in rows]))
    body = [["mean head (unfitted)", len(rows), mean_median, 1.0, float(np.mean([r["mean_head"] for r in rows])),
             None, None, None, None, None, None, None, None]]
    for name in fits:
        now = np.array([r[name]["now"] for r in rows])
        nme = np.array([100 * r[name]["nme"] for r in rows])
        over, flagged = nme > 100 * NME_LIMIT, np.array([r[name]["flagged"] for r in rows])
        body.append([name, len(rows), float(np.median(now)), float(np.median(now)) / mean_median, float(now.mean()),
                     float(np.mean(now < np.array([r["mean_head"] for r in rows]))), float(np.median(nme)),
                     float(nme.mean()), float(nme.max()), int(over.sum()), int((flagged & over).sum()),
                     int((flagged & ~over).sum()),
                     separation_auc(np.array([r[name]["confidence"] for r in rows]), over)])
    columns = ["fit", "images", "NoW median of medians", "ratio to the mean head", "NoW mean of medians",
               "share better than the mean head", "NME median %", "NME mean %", "NME max %",
               f"NME > {100 * NME_LIMIT:g}%", "of those flagged suspect", f"flagged, NME ≤ {100 * NME_LIMIT:g}%",
               f"confidence AUC (lower over {100 * NME_LIMIT:g}%)"]
    missed = len(plan) - len(detected)
    settings = {"seed": seed, "subjects": f"{len(heads)} ({', '.join(h.name for h in heads)})", "views": len(plan),
                "detected": len(detected), **timing, "fit s (all variants, incl. compile)": round(seconds, 1)}
    note = ("A check on views no setting was chosen on: rendered as in the identity section, but the sampled heads, "
            "expressions, lights, backgrounds and poses drawn with another seed, each subject at nominal |yaw| "
            f"{', '.join(f'{y:g}' for y in FRESH_HARD_YAWS)} (±3°, pitch within ±30°). Variants and scores as in the "
            "identity section; flagged suspect: confidence < QualityConfig.min_confidence or the detection doubted "
            "(detection_doubt: its score, FaceMesh losing the face on the crop, the two looks disagreeing). "
            "Confidence AUC: the share of (over, not over) pairs of fits in which the fit over the limit has the lower "
            f"FitResult.confidence (0.5: chance). {missed} views without a MediaPipe detection.")
    return result(f"{NAME}_fresh_hard", "Hard poses on a fresh draw of rendered heads (identity and landmarks)",
                  "full", settings, [table(f"Nominal |yaw| 50-75, seed {seed}", columns, body)], data={"rows": rows},
                  note=note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 subjects x 5 views, short fits (about 10 minutes on 2 "
                        "CPU cores); default: 8 subjects x 9 views, the library's default fit")
    parser.add_argument("--pictures", type=Path, default=None,
                        help="folder for renders and fitted overlays (PNG; several minutes more), e.g. /tmp/identity")
    parser.add_argument("--sampled-heads", type=int, default=None, help="model heads beside the two scans")
    parser.add_argument("--short-fit", action="store_true", help="quick_config() fits also in the full view plan")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/flamejax_identity_cache"),
                        help="folder of rendered, preprocessed views, keyed by view plan, seed and model (reused "
                        "when present; delete it after changing the rendering)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON result path (default: benchmarks/results/<benchmark>.json, which also updates "
                             "RESULTS.md)")
    parser.add_argument("--same-person", action="store_true", help="also fit 2, 3, 5 views (yaw -40..+40) of each "
                        "subject jointly with one identity, from their landmarks and then from their pixels with one "
                        "albedo (full view plan)")
    parser.add_argument("--views-only", action="store_true", help="render and preprocess into --cache, no fits")
    parser.add_argument("--jaw-conventions", action="store_true",
                        help="instead: the jaw's 17 points of the fits and of MediaPipe in both conventions "
                        "(FLAME-topology heads, full view plan)")
    parser.add_argument("--single-photometric", action="store_true",
                        help="instead: each view at |yaw| <= 40 fitted alone in photometric mode (full view plan)")
    parser.add_argument("--beyond-75", action="store_true",
                        help="instead: views at 70, 80 and 88 degrees of yaw: detections, fits, the silhouette's trust")
    parser.add_argument("--fresh-hard", type=int, default=None, metavar="SEED",
                        help="instead: hard poses (|yaw| 50-75) of heads, lights and poses drawn with SEED, views no "
                        "setting was chosen on: the library default and its hard-pose variants")
    args = parser.parse_args()
    modes = ((args.fresh_hard is not None, lambda: run_fresh_hard(args.fresh_hard, args.cache)),
             (args.beyond_75, lambda: run_beyond_75(args.cache)),
             (args.jaw_conventions, lambda: run_jaw_conventions(args.cache)),
             (args.single_photometric, lambda: run_single_photometric(args.cache)))
    chosen = next((run_mode for wanted, run_mode in modes if wanted), None)
    if chosen is None and args.views_only:
        prepare(args.quick, args.sampled_heads, args.cache)
        return
    payload = chosen() if chosen is not None else run(args.quick, args.pictures, args.sampled_heads,
                                                      args.short_fit or None, args.cache,
                                                      same_person_views=args.same_person)
    save_and_report(payload, args.out or RESULTS_DIR / f"{payload['benchmark']}.json")


if __name__ == "__main__":
    main()
