"""The z-buffer hard rasterizer against the NumPy reference, the tiled rasterizer and finite differences."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flamejax.camera import Camera
from flamejax.render import (RasterConfig, UVLayout, load_uv_layout, rasterize, rasterize_visible, render_mesh,
                             task_count, visible_faces)
from tests.conftest import assert_directional_derivatives, shared_flame_dir
from tests.test_render import AMBIGUOUS, HARD, SIZE, flame_template, random_triangles, reference_raster  # noqa: F401

ZBUFFER = dataclasses.replace(HARD, faces_per_pixel=1)
TILED = dataclasses.replace(ZBUFFER, hard_rasterizer="tiled")


def edge_pixels(alpha: np.ndarray) -> np.ndarray:
    """Pixels next to (or on) a change of the alpha mask."""
    padded = np.pad(alpha, 1, mode="edge")
    neighbours = [padded[1 + di: padded.shape[0] - 1 + di, 1 + dj: padded.shape[1] - 1 + dj]
                  for di in (-1, 0, 1) for dj in (-1, 0, 1)]
    return np.any([n != alpha for n in neighbours], axis=0)


@pytest.fixture(scope="module")
def triangles():
    verts, faces = random_triangles(0)
    return verts, faces, reference_raster(verts, faces, 1)[0]


@pytest.mark.parametrize("chunk", [None, 512])
def test_visible_faces_match_numpy_reference(triangles, chunk):
    verts, faces, frags_ref = triangles
    found = np.asarray(jax.jit(visible_faces, static_argnums=(2, 3))(jnp.asarray(verts), jnp.asarray(faces), ZBUFFER,
                                                                     chunk))
    assert int(task_count(jnp.asarray(verts), jnp.asarray(faces), ZBUFFER)) > 512 * 4  # several loop steps
    compared = 0
    for i in range(SIZE):
        for j in range(SIZE):
            ref = frags_ref[i][j]
            if ref and ref[0][3] < AMBIGUOUS:
                continue
            assert found[i, j] == (ref[0][1] if ref else -1), (i, j)
            compared += bool(ref)
    assert compared > 1000


def test_zbuffer_fragments_equal_tiled_fragments(triangles):
    verts, faces, _ = triangles
    raster = jax.jit(rasterize, static_argnums=2)
    tiled = raster(jnp.asarray(verts), jnp.asarray(faces), TILED)
    zbuf = jax.jit(rasterize_visible, static_argnums=2)(jnp.asarray(verts), jnp.asarray(faces), ZBUFFER)
    same = np.asarray(zbuf.face_index == tiled.face_index)[..., 0]
    assert same.mean() > 0.995
    for name in ("vertex_index", "bary", "depth", "signed_dist"):
        a, b = (np.asarray(getattr(f, name))[same] for f in (zbuf, tiled))
        np.testing.assert_allclose(a, b, atol=2e-5, err_msg=name)


def test_whole_image_face_and_empty_image():
    big = jnp.array([[-500.0, -500.0, 2.0], [900.0, -400.0, 2.0], [-400.0, 900.0, 2.0], [0.0, 0.0, -1.0]])
    faces = jnp.array([[0, 1, 2], [0, 1, 3]])  # the second face crosses the near plane: dropped
    found = np.asarray(visible_faces(big, faces, ZBUFFER, chunk=1000))
    np.testing.assert_array_equal(found, 0)
    np.testing.assert_array_equal(np.asarray(visible_faces(big + jnp.array([0.0, 0.0, 20.0]), faces, ZBUFFER)), -1)


def test_vmapped_visible_faces_equal_single_images(triangles):
    verts, faces, _ = triangles
    batch = jnp.stack([verts, verts * np.array([0.5, 0.5, 1.0], np.float32)])
    both = jax.jit(jax.vmap(visible_faces, in_axes=(0, None, None, None)), static_argnums=(2, 3))(
        batch, jnp.asarray(faces), ZBUFFER, 1024)
    for k in range(2):
        np.testing.assert_array_equal(both[k], visible_faces(batch[k], jnp.asarray(faces), ZBUFFER, 1024))


@functools.partial(jax.jit, static_argnums=7)
def _render_and_grads(verts, faces, camera, layout, texture, light, weight, config):
    def loss(v, tex, sh):
        r = render_mesh(v, faces, camera, layout, tex, sh, config)
        return jnp.sum(r.image * weight[..., None]), r

    (_, r), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(verts, texture, light)
    return r, grads


def _render_pair(*args):
    """Hard renders with both rasterizers and the gradients of a weighted sum of the colours."""
    return [jax.tree.map(np.asarray, _render_and_grads(*args, dataclasses.replace(RasterConfig(image_size=128),
                                                                                  hard_rasterizer=r)))
            for r in ("zbuffer", "tiled")]


def test_flame_head_renders_like_the_tiled_rasterizer(flame_template):
    verts, faces = flame_template
    layout = load_uv_layout(shared_flame_dir() / "head_template_mesh.obj")
    rng = np.random.default_rng(4)
    texture = jnp.asarray(rng.uniform(0.3, 0.9, (32, 32, 3)), jnp.float32)
    light = jnp.zeros((9, 3)).at[0].set(3.0).at[3].set(0.6).at[1].set(-0.3)
    for yaw, pitch in ((0.0, 0.0), (0.7, 0.1), (-1.3, -0.2)):
        camera = Camera(jnp.array([pitch, yaw, 0.0]), jnp.array([0.0, 0.0, -0.9]), jnp.array(18.0))
        weight = jnp.asarray(rng.normal(size=(128, 128)), jnp.float32)
        (new, new_grads), (old, _) = _render_pair(verts, faces, camera, layout, texture, light, weight)
        mismatch = new.alpha != old.alpha
        union = (new.alpha > 0) | (old.alpha > 0)
        assert mismatch.sum() / union.sum() < 0.01, (yaw, mismatch.sum())
        assert not np.any(mismatch & ~edge_pixels(old.alpha)), "alpha differs only on silhouette edges"
        same = (new.fragments.face_index == old.fragments.face_index)[..., 0] & (new.alpha > 0)
        assert same.sum() > 0.99 * (old.alpha > 0).sum()
        np.testing.assert_allclose(new.image[same], old.image[same], atol=1e-4)
        np.testing.assert_allclose(new.normals[same], old.normals[same], atol=1e-4)
        # Gradients agree where both pick the same face (weight 0 elsewhere).
        (_, masked_new), (_, masked_old) = _render_pair(verts, faces, camera, layout, texture, light,
                                                        weight * jnp.asarray(same))
        for a, b in zip(masked_new, masked_old):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(b).max())
        assert np.abs(new_grads[0]).max() > 0


def test_hard_render_gradients_match_finite_differences():
    """Hard z-buffer render of a small textured sphere: float64 finite differences w.r.t. vertices, texture and
    light (a step of 1e-6 moves no pixel centre across an edge, so the face ids stay fixed)."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.1)
    faces = jnp.asarray(sphere.faces, jnp.int32)
    v = np.asarray(sphere.vertices)
    uv = np.stack([np.arctan2(v[:, 0], v[:, 2]) / (2 * np.pi) + 0.5, 0.5 - v[:, 1] / 0.2], axis=-1)
    layout = UVLayout(jnp.asarray(uv, jnp.float32), faces, faces)
    rng = np.random.default_rng(12)
    config = RasterConfig(image_size=32)
    with jax.enable_x64(True):
        camera = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), Camera.default(fov_deg=15.0))
        light = jnp.zeros((9, 3)).at[0].set(3.0).at[3].set(1.0).at[4].set(0.5)
        args = (jnp.asarray(v), jnp.asarray(rng.uniform(0.2, 0.9, (8, 8, 3))), light)
        target = jnp.asarray(rng.uniform(size=(32, 32, 3)))

        def loss(verts, texture, sh):
            return jnp.sum(render_mesh(verts, faces, camera, layout, texture, sh, config).image * target)

        value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
        grads = assert_directional_derivatives(value_and_grad, args, rng, rtol=1e-5, atol=1e-8)
        assert float(jnp.abs(grads[0]).max()) > 0
