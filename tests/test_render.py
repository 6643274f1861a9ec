"""Renderer against a plain NumPy reference rasterizer, finite differences, hand computations and a FLAME picture."""

from __future__ import annotations

import dataclasses
import functools
import math
import pickle
import zipfile

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flamejax.camera import Camera, project
from flamejax.render import (
    RasterConfig,
    UVLayout,
    albedo_texture,
    count_tile_faces,
    fill_texture,
    hard_blend,
    interpolate,
    load_albedo_model,
    load_uv_layout,
    rasterize,
    render_mesh,
    sample_texture,
    sample_texture_mipmapped,
    shade_for_display,
    sh_basis,
    sh_shading,
    soft_blend,
    texel_footprint,
    vertex_normals,
)
from tests.conftest import assert_directional_derivatives, shared_flame_dir

SIZE = 64
K = 4
HARD = RasterConfig(image_size=SIZE, faces_per_pixel=K, tile_size=8, faces_per_tile=64, blur_radius=0.0)
SOFT = dataclasses.replace(HARD, blur_radius=2.5, sigma=4e-3)
AMBIGUOUS = 1e-3
"""Pixels this close (in barycentric units) to an edge may go either way in float32: skipped in comparisons."""


def random_triangles(seed: int, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """n separate, overlapping triangles of 4-24 px at depths 1-3, some reaching past the image border."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-4, SIZE + 4, (n, 1, 2))
    xy = centre + rng.uniform(-12, 12, (n, 3, 2))
    z = rng.uniform(1.0, 3.0, (n, 1)) + rng.uniform(-0.3, 0.3, (n, 3))
    verts = np.concatenate([xy, z[..., None]], axis=-1).reshape(-1, 3).astype(np.float32)
    return verts, np.arange(3 * n, dtype=np.int32).reshape(n, 3)


def cross2(a, b):
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def reference_raster(verts: np.ndarray, faces: np.ndarray, k: int):
    """Face by face in float64 over all pixel centres: per pixel the covering faces nearest first as
    (depth, face, perspective bary, min screen bary), and the exact distance from each pixel centre to each face."""
    rows, cols = np.meshgrid(np.arange(SIZE) + 0.5, np.arange(SIZE) + 0.5, indexing="ij")
    p = np.stack([cols, rows], axis=-1)
    frags = [[[] for _ in range(SIZE)] for _ in range(SIZE)]
    dist = np.zeros((SIZE, SIZE, len(faces)))
    for f, t in enumerate(verts.astype(np.float64)[faces]):
        a, b, c = t[:, :2]
        w = np.stack([cross2(c - b, p - b), cross2(a - c, p - c), cross2(b - a, p - a)], axis=-1) / cross2(b - a, c - a)
        segment = []
        for s, e in ((a, b), (b, c), (c, a)):
            along = np.clip(np.sum((p - s) * (e - s), axis=-1) / np.sum((e - s) ** 2), 0, 1)
            segment.append(np.linalg.norm(p - s - along[..., None] * (e - s), axis=-1))
        dist[..., f] = np.min(segment, axis=0)
        for i, j in zip(*np.nonzero(w.min(axis=-1) >= 0)):
            inv_z = np.sum(w[i, j] / t[:, 2])
            frags[i][j].append((1 / inv_z, f, (w[i, j] / t[:, 2]) / inv_z, w[i, j].min()))
    return [[sorted(frag)[:k] for frag in row] for row in frags], dist


@pytest.fixture(scope="module")
def scene():
    verts, faces = random_triangles(0)
    frags_ref, dist_ref = reference_raster(verts, faces, K)
    raster = jax.jit(rasterize, static_argnums=2)
    hard = jax.tree.map(np.asarray, raster(jnp.asarray(verts), jnp.asarray(faces), HARD))
    soft = jax.tree.map(np.asarray, raster(jnp.asarray(verts), jnp.asarray(faces), SOFT))
    return verts, faces, frags_ref, dist_ref, hard, soft


def test_hard_fragments_match_numpy_reference(scene):
    verts, faces, frags_ref, _, hard, _ = scene
    compared = 0
    for i in range(SIZE):
        for j in range(SIZE):
            ref = frags_ref[i][j]
            if any(m < AMBIGUOUS for *_, m in ref):
                continue
            n = len(ref)
            assert list(hard.face_index[i, j, :n]) == [f for _, f, _, _ in ref], (i, j)
            assert np.all(hard.face_index[i, j, n:] == -1)
            for slot, (depth, _, bary, _) in enumerate(ref):
                np.testing.assert_allclose(hard.bary[i, j, slot], bary, atol=1e-4)
                np.testing.assert_allclose(hard.depth[i, j, slot], depth, rtol=1e-5)
            compared += n
    assert compared > 1000
    valid = hard.face_index >= 0
    both = valid[..., 1:] & valid[..., :-1]
    assert np.all(hard.depth[..., 1:][both] >= hard.depth[..., :-1][both]), "nearest first"
    assert np.all(valid[..., :-1] | ~valid[..., 1:]), "empty slots last"
    assert np.all(hard.signed_dist[valid] <= 0) and np.all(hard.vertex_index[valid] == faces[hard.face_index[valid]])
    np.testing.assert_allclose(hard.bary.sum(-1)[valid], 1.0, atol=1e-5)


def test_soft_fragments_cover_blur_radius(scene):
    _, _, frags_ref, dist_ref, hard, soft = scene
    # Covering faces come first, exactly as in hard mode.
    np.testing.assert_array_equal(np.where(hard.face_index >= 0, soft.face_index, -1), hard.face_index)
    valid = soft.face_index >= 0
    d = np.take_along_axis(dist_ref, np.maximum(soft.face_index, 0), axis=-1)
    np.testing.assert_allclose(np.abs(soft.signed_dist)[valid], d[valid], atol=2e-3)
    outside = valid & (soft.signed_dist > 0)
    assert outside.sum() > 500 and np.all(soft.signed_dist[outside] <= SOFT.blur_radius * math.sqrt(2) + 1e-3)
    # Where at most K faces are within the radius, all of them are kept (near a vertex, a few more may be).
    near = dist_ref <= SOFT.blur_radius - 1e-3
    checked = 0
    for i, j in zip(*np.nonzero(near.any(-1))):
        wanted = set(np.nonzero(near[i, j])[0]) | {f for _, f, _, _ in frags_ref[i][j]}
        if len(wanted) <= K:
            assert wanted <= set(soft.face_index[i, j]), (i, j)
            checked += 1
    assert checked > 500


def test_hard_blend_and_tiny_sigma_soft_blend_agree(scene):
    verts, faces, _, _, hard, soft = scene
    colors = jnp.asarray(np.random.default_rng(1).uniform(size=(len(verts), 3)), jnp.float32)
    hard_img = np.asarray(hard_blend(interpolate(hard, colors), hard, jnp.zeros(3)))
    soft_as_hard = np.asarray(hard_blend(interpolate(soft, colors), soft, jnp.zeros(3)))
    np.testing.assert_allclose(soft_as_hard, hard_img, atol=1e-6)
    assert set(np.unique(hard_img[..., 3])) == {0.0, 1.0}
    sharp = dataclasses.replace(SOFT, sigma=1e-8)
    soft_img = np.asarray(soft_blend(interpolate(soft, colors), soft, sharp, jnp.zeros(3)))
    covered = hard_img[..., 3] == 1
    assert np.mean(np.abs(soft_img[..., 3] - hard_img[..., 3]) < 1e-2) > 0.97
    assert np.mean(np.all(np.abs(soft_img - hard_img) < 1e-2, axis=-1)[covered]) > 0.97
    # Background colour only where no face is within the blur radius.
    np.testing.assert_array_equal(soft_img[soft.face_index[..., 0] < 0], 0.0)


def test_vmapped_rasterize_equals_single_images(scene):
    verts, faces, _, _, hard, _ = scene
    shifted = verts + np.array([3.0, -2.0, 0.5], np.float32)
    batch = jax.jit(jax.vmap(rasterize, in_axes=(0, None, None)), static_argnums=2)(
        jnp.stack([verts, shifted]), jnp.asarray(faces), HARD)
    np.testing.assert_array_equal(batch.face_index[0], hard.face_index)
    np.testing.assert_allclose(batch.bary[0], hard.bary, atol=1e-6)
    assert not np.array_equal(batch.face_index[1], hard.face_index)


def test_interpolate_vertex_and_face_corner_attributes_agree(scene):
    verts, faces, _, _, hard, _ = scene
    attrs = jnp.asarray(np.random.default_rng(2).normal(size=(len(verts), 2)), jnp.float32)
    np.testing.assert_allclose(interpolate(hard, attrs), interpolate(hard, attrs[jnp.asarray(faces)]), atol=1e-6)


def test_count_tile_faces_and_overflow_keeps_visible_faces():
    verts, faces = random_triangles(3, n=240)
    counts = np.asarray(count_tile_faces(jnp.asarray(verts), jnp.asarray(faces), HARD))
    assert counts.shape == (8, 8) and counts.max() > 16
    small = dataclasses.replace(HARD, faces_per_tile=16, faces_per_pixel=1)
    full = dataclasses.replace(HARD, faces_per_tile=128, faces_per_pixel=1)
    raster = jax.jit(rasterize, static_argnums=2)
    a, b = (np.asarray(raster(jnp.asarray(verts), jnp.asarray(faces), c).face_index[..., 0]) for c in (small, full))
    assert (a == b).mean() > 0.8  # overflow drops the farthest faces of a tile first


def soft_loss(screen_verts, faces, colors, weights, config):
    fragments = rasterize(screen_verts, faces, config)
    return jnp.sum(soft_blend(interpolate(fragments, colors), fragments, config, jnp.full(3, 0.2)) * weights)


def test_soft_gradients_match_finite_differences():
    verts, faces = random_triangles(5, n=12)
    rng = np.random.default_rng(6)
    with jax.enable_x64(True):
        v = jnp.asarray(verts, jnp.float64)
        colors = jnp.asarray(rng.uniform(size=(len(verts), 3)))
        weights = jnp.asarray(rng.normal(size=(SIZE, SIZE, 4)))
        config = dataclasses.replace(SOFT, faces_per_pixel=8)
        loss = jax.jit(lambda x: soft_loss(x, jnp.asarray(faces), colors, weights, config))
        grad = jax.grad(loss)(v)
        eps = 1e-5
        for _ in range(4):
            direction = jnp.asarray(rng.normal(size=v.shape))
            numeric = (loss(v + eps * direction) - loss(v - eps * direction)) / (2 * eps)
            np.testing.assert_allclose(jnp.vdot(grad, direction), numeric, rtol=2e-4, atol=1e-6)
        # The silhouette moves: moving a lone triangle's vertex outwards changes its coverage.
        assert float(jnp.max(jnp.abs(grad[:, :2]))) > 0


def test_soft_silhouette_gradient_reaches_vertices():
    verts = jnp.array([[20.0, 20.0, 2.0], [44.0, 22.0, 2.0], [30.0, 44.0, 2.0]])
    faces = jnp.array([[0, 1, 2]])
    white = jnp.ones((3, 3))

    def coverage(v, config, blend):
        fragments = rasterize(v, faces, config)
        out = blend(interpolate(fragments, white), fragments)
        return jnp.sum(out[..., 3])

    soft = jax.jit(jax.grad(coverage), static_argnums=(1, 2))(verts, SOFT, functools.partial(soft_blend, config=SOFT))
    # Pulling vertex 1 to the right grows the triangle; hard alpha is piecewise constant (no gradient by design).
    assert float(soft[1, 0]) > 1.0


def test_render_mesh_gradients_match_finite_differences():
    """Soft render of a small textured sphere: finite differences w.r.t. vertices, texture and light (float64)."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=1, radius=0.1)
    faces = jnp.asarray(sphere.faces, jnp.int32)
    v = np.asarray(sphere.vertices)
    uv = np.stack([np.arctan2(v[:, 0], v[:, 2]) / (2 * np.pi) + 0.5, 0.5 - v[:, 1] / 0.2], axis=-1)
    layout = UVLayout(jnp.asarray(uv, jnp.float32), faces, faces)
    rng = np.random.default_rng(9)
    config = RasterConfig(image_size=32, faces_per_pixel=12, sigma=1e-3)  # K above the faces within the blur radius
    camera = Camera.default(fov_deg=15.0)
    with jax.enable_x64(True):
        light = jnp.zeros((9, 3)).at[0].set(3.0).at[3].set(1.0)
        args = (jnp.asarray(v), jnp.asarray(rng.uniform(0.2, 0.9, (8, 8, 3))), light)
        target = jnp.asarray(rng.uniform(size=(32, 32, 4)))
        cam64 = jax.tree.map(lambda x: x.astype(jnp.float64), camera)

        def loss(verts, texture, light):
            out = render_mesh(verts, faces, cam64, layout, texture, light, config, "soft")
            return jnp.sum(jnp.concatenate([out.image, out.alpha[..., None]], -1) * target)

        value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
        assert_directional_derivatives(value_and_grad, args, rng, rtol=1e-4, atol=1e-7)


def test_sh_shading_matches_direct_formula():
    rng = np.random.default_rng(7)
    n = rng.normal(size=(50, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    coeffs = rng.normal(size=(9, 3))
    x, y, z = n.T
    pi = math.pi
    direct = (
        np.outer(np.full_like(x, 1 / math.sqrt(4 * pi)), coeffs[0])
        + sum(np.outer(c * 2 * pi / 3 * math.sqrt(3 / (4 * pi)), coeffs[i]) for i, c in ((1, x), (2, y), (3, z)))
        + sum(np.outer(c * 3 * pi / 4 * math.sqrt(5 / (12 * pi)), coeffs[i])
              for i, c in ((4, x * y), (5, x * z), (6, y * z)))
        + np.outer((x * x - y * y) * 3 * pi / 8 * math.sqrt(5 / (12 * pi)), coeffs[7])
        + np.outer((3 * z * z - 1) * pi / 8 * math.sqrt(5 / (4 * pi)), coeffs[8])
    )
    np.testing.assert_allclose(sh_shading(jnp.asarray(n, jnp.float32), jnp.asarray(coeffs, jnp.float32)), direct,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(sh_basis(jnp.array([0.0, 0.0, 1.0])))[[0, 3, 8]],
                               [0.2820948, 1.0233267, 0.4954159],
                               rtol=1e-6)


def test_vertex_normals_of_a_tetrahedron_point_outwards():
    verts = jnp.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    faces = jnp.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    n = np.asarray(vertex_normals(verts, faces))
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, rtol=1e-6)
    assert np.all(np.sum(n * (np.asarray(verts) - 0.25), axis=-1) > 0)


def test_sample_texture_is_bilinear_with_texel_centres_and_clamping():
    tex = jnp.array([[[0.0], [1.0]], [[2.0], [3.0]]])
    uv = jnp.array([[0.25, 0.25], [0.375, 0.25], [0.5, 0.5], [0.25, 0.75], [0.0, 0.0], [1.0, 1.0], [0.5, 0.625]])
    np.testing.assert_allclose(sample_texture(tex, uv)[:, 0], [0.0, 0.25, 1.5, 2.0, 0.0, 3.0, 2.0], atol=1e-6)
    du = jax.grad(lambda u: sample_texture(tex, jnp.array([u, 0.25]))[0])(0.375)
    np.testing.assert_allclose(du, 2.0, rtol=1e-6)  # (t01 - t00) per texel, two texels per unit
    dtex = jax.grad(lambda t: sample_texture(t, jnp.array([0.375, 0.25]))[0])(tex)
    np.testing.assert_allclose(dtex[..., 0], [[0.75, 0.25], [0.0, 0.0]], atol=1e-6)


def test_texel_footprint_is_the_texel_area_one_pixel_covers():
    screen = jnp.array([[[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], [[0.0, 0.0], [5.0, 5.0], [10.0, 10.0]]])
    uvs = jnp.array([[[0.0, 0.0], [0.5, 0.0], [0.0, 0.25]]] * 2)
    # 64 texel columns over 10 px across, 16 texel rows over 10 px down: 6.4 x 1.6 texels per pixel; no area: inf
    np.testing.assert_allclose(texel_footprint(screen, uvs, (64, 128)), [math.sqrt(6.4 * 1.6), np.inf], rtol=1e-5)


def test_trilinear_lookup_blends_the_mip_levels_its_footprint_brackets():
    rng = np.random.default_rng(0)
    tex = jnp.asarray(rng.random((16, 16, 3)), jnp.float32)
    halves = [tex, tex.reshape(8, 2, 8, 2, 3).mean(axis=(1, 3)), tex.reshape(4, 4, 4, 4, 3).mean(axis=(1, 3))]
    uv = jnp.asarray(rng.random((50, 2)), jnp.float32)
    at = lambda footprint: sample_texture_mipmapped(tex, uv, jnp.full(50, footprint))  # noqa: E731
    np.testing.assert_allclose(at(0.5), sample_texture(tex, uv), atol=1e-6)  # magnified: plain bilinear
    np.testing.assert_allclose(at(2.0), sample_texture(halves[1], uv), atol=1e-6)
    np.testing.assert_allclose(at(100.0), sample_texture(halves[2], uv), atol=1e-6)  # at most two halvings
    np.testing.assert_allclose(at(math.sqrt(2.0)), (sample_texture(tex, uv) + sample_texture(halves[1], uv)) / 2,
                               atol=1e-6)
    # A pixel at the centre of a 4 x 4 block, 4 texels wide, takes the block's mean and passes its gradient to all 16.
    grad = jax.grad(lambda t: sample_texture_mipmapped(t, jnp.array([0.375, 0.625]), jnp.array(4.0))[0])(tex)
    expected = np.zeros((16, 16))
    expected[8:12, 4:8] = 1 / 16
    np.testing.assert_allclose(grad[..., 0], expected, atol=1e-7)


class FillTextureTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_keeps_the_known_texels_and_fills_the_rest_smoothly_between_them(self):
        # Two known bands (rows 0-3 and 20-23) of a 24 x 40 texture, whose sides are not powers of two.
        known = np.zeros((24, 40), np.float32)
        known[:4], known[20:] = 1.0, 1.0
        texture = np.zeros((24, 40, 3), np.float32)
        texture[:4], texture[20:] = [0.8, 0.6, 0.5], [0.2, 0.3, 0.4]
        texture[4:20] = [0.0, 1.0, 0.0]  # what the unknown texels held: gone after the fill
        fill = self.variant(fill_texture)
        filled = np.asarray(fill(jnp.asarray(texture), jnp.asarray(known)))
        np.testing.assert_array_equal(filled[known > 0], texture[known > 0])
        red = filled[:, :, 0]
        assert np.all(np.diff(red[3:21].mean(axis=1)) < 0)  # from one band's colour down to the other's
        assert np.all((red[4:20] > 0.2) & (red[4:20] < 0.8)) and np.all(filled[4:20, :, 1] < 0.6)
        assert np.max(np.abs(np.diff(red, axis=0))) < 0.15 and np.ptp(red[12]) < 0.05  # no step, no stripes
        # Nothing known: unchanged; a batch: each texture by itself.
        np.testing.assert_array_equal(np.asarray(fill(jnp.asarray(texture), jnp.zeros((24, 40)))), texture)
        batch = jax.vmap(fill_texture)(jnp.stack([jnp.asarray(texture)] * 2), jnp.stack([jnp.asarray(known)] * 2))
        np.testing.assert_allclose(np.asarray(batch[1]), filled, atol=1e-6)


@pytest.mark.parametrize("rasterizer", ["zbuffer", "tiled"])
def test_a_small_render_of_a_fine_texture_is_its_mean_with_trilinear_filtering(flame_template, rasterizer):
    verts, faces = flame_template
    layout = load_uv_layout(shared_flame_dir() / "head_template_mesh.obj")
    checker = jnp.asarray(np.indices((256, 256)).sum(0) % 2, jnp.float32)[..., None] * jnp.ones(3)
    sh = jnp.zeros((9, 3)).at[0].set(1.0 / 0.2820948)  # ambient light 1: the image is the albedo
    pictures = {}
    for texture_filter in ("bilinear", "trilinear"):
        config = RasterConfig(image_size=32, faces_per_pixel=4, tile_size=8, faces_per_tile=512,
                              hard_rasterizer=rasterizer, texture_filter=texture_filter)
        out = render_mesh(verts, faces, Camera.default(), layout, checker, sh, config)
        pictures[texture_filter] = np.asarray(out.image)[np.asarray(out.alpha) == 1, 0]
    # A face pixel spans several 1-texel squares: trilinear gives their mean, bilinear whatever its centre hits.
    assert np.abs(pictures["trilinear"] - 0.5).mean() < 0.25 * np.abs(pictures["bilinear"] - 0.5).mean()
    with pytest.raises(ValueError, match="texture_filter"):
        RasterConfig(texture_filter="nearest")


def _write_npz(path, arrays: dict):
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in arrays.items():
            with archive.open(key + ".npy", "w") as f:
                np.lib.format.write_array(f, value)


@pytest.mark.parametrize("kind", ["bfm", "flame"])
def test_albedo_model_conventions(tmp_path, kind):
    side, n_pc = 8, 5
    rng = np.random.default_rng(8)
    mean_bgr = rng.uniform(size=(side, side, 3)).astype(np.float32)
    basis_bgr = rng.normal(size=(side, side, 3, n_pc)).astype(np.float32)
    if kind == "bfm":
        arrays, scale = {"MU": mean_bgr.reshape(1, -1), "PC": basis_bgr.reshape(-1, n_pc)}, 1.0
    else:
        arrays, scale = {"mean": mean_bgr * 255, "tex_dir": basis_bgr * 255}, 255.0
    _write_npz(tmp_path / "albedo.npz", arrays)
    model = load_albedo_model(tmp_path / "albedo.npz", n_components=3, texture_size=4)
    coeffs = jnp.array([0.5, -1.0, 2.0])
    expected = (mean_bgr + basis_bgr[..., :3] @ np.asarray(coeffs))[..., ::-1]
    expected = expected.reshape(4, 2, 4, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(albedo_texture(model, coeffs), expected, rtol=1e-5 * scale, atol=1e-5)


def test_missing_albedo_model_returns_none(monkeypatch):
    monkeypatch.setattr("flamejax.render._texture.find_file", lambda *a, **k: None)
    assert load_albedo_model() is None


@pytest.fixture(scope="module")
def flame_template():
    path = shared_flame_dir() / "flame_test_model.pkl"
    if not path.is_file() or not (shared_flame_dir() / "head_template_mesh.obj").is_file():
        pytest.skip("no FLAME assets in ../shared/flame")
    with open(path, "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    return jnp.asarray(raw["v_template"], jnp.float32), jnp.asarray(np.asarray(raw["f"], np.int32))


def test_uv_layout_of_the_flame_template(flame_template):
    _, faces = flame_template
    layout = load_uv_layout(shared_flame_dir() / "head_template_mesh.obj")
    assert layout.uv.shape == (5118, 2) and layout.face_uv_index.shape == (9976, 3)
    np.testing.assert_array_equal(layout.faces, faces)
    assert float(layout.uv.min()) >= 0.0 and float(layout.uv.max()) <= 1.0
    # v is flipped to image rows.
    with open(shared_flame_dir() / "head_template_mesh.obj") as f:
        first_vt = next(line.split()[1:3] for line in f if line.startswith("vt "))
    np.testing.assert_allclose(layout.uv[0], [float(first_vt[0]), 1 - float(first_vt[1])], atol=1e-6)


def test_flame_template_renders_upright_face(flame_template, tmp_path):
    verts, faces = flame_template
    camera = Camera.default()
    config = RasterConfig(image_size=256)
    picture = np.asarray(jax.jit(shade_for_display, static_argnums=3)(verts, faces, camera, config))
    alpha = picture[..., 3]
    assert 0.2 < alpha.mean() < 0.5
    pixels, depth = (np.asarray(x) for x in project(camera, verts, 256))
    fragments = jax.jit(rasterize, static_argnums=2)(jnp.concatenate([pixels, depth[:, None]], -1), faces,
                                                     dataclasses.replace(config, blur_radius=0.0))
    visible = np.asarray(fragments.vertex_index[..., 0, :])

    def seen_at(vertex):
        j, i = pixels[vertex].astype(int)
        return visible[i, j], fragments.depth[i, j, 0]

    nose = int(np.argmax(verts[:, 2]))
    ids, d = seen_at(nose)
    assert nose in ids or abs(float(d) - depth[nose]) < 2e-3
    for iris in (4051, 4597):  # iris centres: the eyeballs (vertices >= 3931) are visible there
        ids, _ = seen_at(iris)
        assert np.all(ids >= 3931)
    top, bottom = int(np.argmax(verts[:, 1])), int(np.argmin(verts[:, 1]))
    assert pixels[top, 1] < pixels[nose, 1] < pixels[bottom, 1]
    assert alpha[: int(pixels[top, 1]) - 2].max() == 0 and alpha[int(pixels[top, 1]) + 3, 128] == 1
    # Lit from the front: the nose is brighter than the cheek's silhouette side.
    assert picture[int(pixels[nose, 1]), int(pixels[nose, 0]), 0] > 0.6


def test_render_mesh_hard_and_soft(flame_template):
    verts, faces = flame_template
    layout = load_uv_layout(shared_flame_dir() / "head_template_mesh.obj")
    texture = jnp.full((16, 16, 3), 0.5)
    sh = jnp.zeros((9, 3)).at[0].set(2.0)
    config = RasterConfig(image_size=64, faces_per_pixel=4, tile_size=8, faces_per_tile=512)
    render = jax.jit(render_mesh, static_argnums=(6, 7))
    hard = render(verts, faces, Camera.default(), layout, texture, sh, config, "hard")
    soft = render(verts, faces, Camera.default(), layout, texture, sh, config, "soft")
    assert hard.fragments.face_index.shape == (64, 64, 1) and soft.fragments.face_index.shape == (64, 64, 4)
    inside = np.asarray(hard.alpha) == 1
    # Constant albedo 0.5 and ambient light 2 * 0.282: every covered pixel has the same colour.
    np.testing.assert_allclose(np.asarray(hard.image)[inside], 0.5 * 2 * 0.2820948, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(hard.normals)[inside], axis=-1), 1.0, rtol=1e-4)
    assert np.abs(np.asarray(soft.alpha) - inside).mean() < 0.1


@pytest.mark.parametrize("rasterizer", ["zbuffer", "tiled"])
def test_rendering_called_eagerly_compiles_once_not_per_call(rasterizer):
    """Overlays and users call the renderer outside ``jax.jit``: its loops must not compile again on each call
    (a compile per picture once ran a 500-picture run out of memory)."""
    from jax import monitoring

    from flamejax.render import render_mesh, shade_for_display

    compiles = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    monitoring.register_event_duration_secs_listener(listen)
    try:
        verts = jnp.array([[-0.1, -0.1, 0.0], [0.1, -0.1, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 0.05]], jnp.float32)
        faces = jnp.array([[0, 1, 2], [0, 1, 3], [1, 2, 3]], jnp.int32)
        config = RasterConfig(image_size=24, hard_rasterizer=rasterizer, faces_per_tile=8)
        sh = jnp.zeros((9, 3), jnp.float32).at[0].set(1.0)
        counts = []
        for turn in (0.1, -0.2, 0.3):
            camera = Camera(jnp.array([0.0, turn, 0.0], jnp.float32), jnp.array([0.0, 0.0, -1.0], jnp.float32),
                            jnp.float32(20.0))
            shaded = shade_for_display(verts, faces, camera, config)
            image = render_mesh(verts, faces, camera, None, None, sh, config).image
            assert float(shaded[..., 3].sum()) > 0 and np.all(np.isfinite(np.asarray(image)))
            counts.append(len(compiles))
        assert counts[0] == counts[1] == counts[2], counts
    finally:
        monitoring.unregister_event_duration_listener(listen)


def test_rendering_inside_a_callers_jit_is_inlined_not_a_nested_program():
    """Traced calls run the renderer itself: a caller's program holds no inner jitted call of it."""
    from flamejax.render import render_mesh

    verts = jnp.array([[-0.1, -0.1, 0.0], [0.1, -0.1, 0.0], [0.0, 0.1, 0.0]], jnp.float32)
    faces = jnp.array([[0, 1, 2]], jnp.int32)
    config = RasterConfig(image_size=8)
    sh = jnp.zeros((9, 3), jnp.float32).at[0].set(1.0)
    camera = Camera(jnp.zeros(3, jnp.float32), jnp.array([0.0, 0.0, -1.0], jnp.float32), jnp.float32(20.0))
    jaxpr = jax.make_jaxpr(lambda v: render_mesh(v, faces, camera, None, None, sh, config).image)(verts)
    inner = {eqn.params.get("name") for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name in ("pjit", "jit")}
    assert not inner & {"render_mesh", "visible_faces", "rasterize", "shade_for_display"}, inner
