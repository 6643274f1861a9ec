"""What the photometric loss counts: FLAME face regions, their texels, eye and mouth openings, hair on the
forehead; and the coarse-to-fine schedule's step split."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from flamejax.fit import AMBIENT_SH, PhotometricConfig, PhotometricTargets, start_appearance
from flamejax.fit._photometric import (_asymmetry, _hair_free, _inside_polygon, _level_targets, _mirror_pairs,
                                       _mirrored_columns, _pixel_weights, _smoothness, level_steps, texel_prior)
from flamejax.fit._targets import LandmarkTargets
from flamejax.render import (REGION_EYEBALL, REGION_FACE, REGION_FOREHEAD, REGION_OTHER, UVLayout, face_regions,
                             load_uv_layout, texel_regions, uv_mirror_axis)
from tests.conftest import shared_flame_dir


def test_face_regions_need_all_three_vertices_and_eyeballs_win():
    faces = np.array([[0, 1, 2], [1, 2, 3], [3, 4, 5], [4, 5, 6], [0, 5, 6]])
    masks = {"face": [0, 1, 2, 3, 4, 5], "forehead": [1, 2, 3], "left_eyeball": [4, 5, 6], "right_eyeball": []}
    assert face_regions(faces, masks).tolist() == [REGION_FACE, REGION_FOREHEAD, REGION_FACE, REGION_EYEBALL,
                                                   REGION_OTHER]


def test_texel_regions_follow_the_uv_triangles():
    # Left half of the UV square: one triangle of region FACE; right half: one of EYEBALL; top right corner empty.
    uv = jnp.asarray([[0.0, 0.0], [0.5, 0.0], [0.0, 1.0], [0.5, 1.0], [1.0, 1.0]], jnp.float32)
    tris = jnp.asarray([[0, 1, 2], [1, 4, 3]], jnp.int32)
    labels = np.asarray(texel_regions(uv, tris, jnp.asarray([REGION_FACE, REGION_EYEBALL]), 8))
    assert labels[0, 0] == REGION_FACE and labels[7, 6] == REGION_EYEBALL and labels[0, 7] == REGION_OTHER
    assert set(np.unique(labels)) == {REGION_OTHER, REGION_FACE, REGION_EYEBALL}


def test_inside_polygon_matches_a_direct_count():
    square = jnp.asarray([[2.0, 2.0], [6.0, 2.0], [6.0, 5.0], [2.0, 5.0]])
    expected = np.zeros((8, 8), np.float32)
    expected[2:5, 2:6] = 1.0  # centres (j + 0.5, i + 0.5) with 2 < x < 6 and 2 < y < 5
    np.testing.assert_array_equal(np.asarray(_inside_polygon(square, 8)), expected)
    concave = jnp.asarray([[0.0, 0.0], [8.0, 0.0], [8.0, 8.0], [4.0, 2.0], [0.0, 8.0]])
    inside = np.asarray(_inside_polygon(concave, 8))
    assert inside[0, 4] == 1 and inside[6, 4] == 0 and inside[6, 0] == 1


def _targets(size: int, image: np.ndarray) -> PhotometricTargets:
    lmk68 = np.zeros((68, 2), np.float32)
    lmk68[36:42] = [[2, 2], [3, 1.5], [5, 1.5], [6, 2], [5, 3], [3, 3]]  # an eye opening around row 2
    lmk68[42:48] = lmk68[36:42] + [8, 0]
    lmk68[60:68] = [[4, 10], [5, 9], [7, 9], [8, 10], [8, 10], [7, 11], [5, 11], [4, 10]]  # the mouth opening
    points = np.zeros((478, 2), np.float32)
    landmarks = LandmarkTargets.from_pixels(points, lmk68, size)
    return PhotometricTargets(jnp.asarray(image), jnp.ones((size, size), jnp.float32), landmarks)


def test_pixel_weights_leave_out_hair_eyes_on_skin_faces_and_the_mouth():
    size = 16
    skin = np.array([0.8, 0.6, 0.5], np.float32)
    image = np.broadcast_to(skin, (size, size, 3)).copy()
    image[12:, :] = [0.15, 0.1, 0.08]  # dark hair in the bottom rows
    config = PhotometricConfig()
    level = _level_targets(_targets(size, image), jnp.asarray(skin), size, config)
    face_region = jnp.asarray([REGION_FACE, REGION_FOREHEAD, REGION_EYEBALL, REGION_OTHER], jnp.int32)
    alpha = jnp.ones((size, size))
    for face, check in ((0, "face"), (1, "forehead"), (2, "eyeball"), (3, "other")):
        weight = np.asarray(_pixel_weights(level, jnp.full((size, size), face), alpha, face_region, config))
        if check == "face":
            assert weight[10, 6] == 0 and weight[12, 0] == 1 and weight[2, 4] == 1  # mouth out, hair rows in
        elif check == "forehead":
            assert weight[12, 0] == 0 and weight[6, 0] == 1  # hair-coloured pixels leave the forehead
        elif check == "eyeball":
            assert weight[2, 4] == 1 and weight[2, 12] == 1 and weight[6, 4] == 0  # only inside the eye openings
        else:
            assert not weight.any()
    uncovered = np.asarray(_pixel_weights(level, jnp.full((size, size), -1), alpha * 0, face_region, config))
    assert not uncovered.any()
    no_regions = np.asarray(_pixel_weights(level, jnp.full((size, size), 3), alpha, None, config))
    assert no_regions[0, 0] == 1 and no_regions[10, 6] == 0


def test_hair_close_to_the_skin_s_tint_leaves_the_forehead_when_the_face_s_own_tint_varies_less():
    """A blond patch passes the fixed colour test (within ``hair_chroma`` of the skin's tint); this face's skin
    varies far less in tint, so ``hair_spread`` turns the patch away, while skin under a shading gradient stays."""
    size = 32
    rng = np.random.default_rng(0)
    skin = np.array([0.8, 0.6, 0.5], np.float32)
    shading = np.linspace(1.0, 0.7, size, dtype=np.float32)[None, :, None]  # side light across the face
    image = (skin * shading * (1.0 + rng.normal(0.0, 0.01, (size, size, 3)))).astype(np.float32)
    image[:6, 20:] = [0.85, 0.75, 0.55]  # blond: chromaticity 0.033 off the skin's, darkness 1.2
    mask = np.zeros((size, size), np.float32)
    mask[8:, :] = 1.0  # the face mask below the hair
    mean_skin = jnp.asarray(image[8:].reshape(-1, 3).mean(0))
    for config, blond_out in ((PhotometricConfig(), True), (PhotometricConfig(hair_spread=None), False)):
        free = np.asarray(_hair_free(jnp.asarray(image), jnp.asarray(mask), mean_skin, config))
        assert free[8:].mean() > 0.98 and free[:6, :16].mean() > 0.98  # skin, shaded or not, stays
        assert (free[:6, 20:].max() == 0) == blond_out
    with pytest.raises(ValueError, match="hair_spread"):
        PhotometricConfig(hair_spread=0.0)


def test_smoothness_does_not_couple_eyeballs_to_skin():
    regions = np.full((4, 4), REGION_FACE, np.int32)
    regions[:, 2:] = REGION_EYEBALL
    regions[0, :2] = REGION_OTHER
    texels = np.zeros((4, 4, 3), np.float32)
    texels[:, 2:] = 1.0  # a white eyeball beside dark skin: no penalty
    assert float(_smoothness(jnp.asarray(texels), jnp.asarray(regions))) == 0.0
    texels[0, :2] = 0.5  # skin under hair (OTHER) unlike the face skin below it: penalised
    assert float(_smoothness(jnp.asarray(texels), jnp.asarray(regions))) > 0.0
    assert float(_smoothness(jnp.asarray(texels), None)) > float(_smoothness(jnp.asarray(texels), jnp.asarray(regions)))


@pytest.mark.parametrize("steps", [1, 7, 200, 401])
def test_level_steps_add_up(steps):
    config = PhotometricConfig(steps=steps, pyramid=((4, 0.6), (2, 0.3), (1, 0.1)))
    split = level_steps(config)
    assert sum(split) == steps and all(s >= 0 for s in split)


@pytest.mark.skipif(not (shared_flame_dir() / "FLAME_masks.pkl").is_file(), reason="no FLAME_masks.pkl")
def test_flame_uv_layout_has_face_skin_eyeballs_and_unmodelled_parts():
    layout = load_uv_layout()
    regions = np.asarray(layout.face_region)
    assert regions.shape == (layout.faces.shape[0],)
    assert {REGION_OTHER, REGION_FACE, REGION_FOREHEAD, REGION_EYEBALL} == set(np.unique(regions))
    assert load_uv_layout(masks=False).face_region is None


@pytest.mark.skipif(not (shared_flame_dir() / "FLAME_masks.pkl").is_file(), reason="no FLAME_masks.pkl")
def test_start_appearance_gives_eyeballs_the_colour_inside_the_eye_openings():
    size = 16
    skin, white = np.array([0.8, 0.6, 0.5], np.float32), np.array([0.9, 0.9, 0.85], np.float32)
    image = np.broadcast_to(skin, (size, size, 3)).copy()
    image[1:4, 1:7] = white  # the first eye opening of _targets
    image[1:4, 9:15] = white
    layout = load_uv_layout()
    config = PhotometricConfig(texture_size=32)
    start = start_appearance(layout, _targets(size, image), config)
    texels = np.asarray(start.texels)
    regions = np.asarray(texel_regions(layout.uv, layout.face_uv_index, layout.face_region, 32))
    eyeball, face = texels[regions == REGION_EYEBALL], texels[regions == REGION_FACE]
    assert len(eyeball) and len(face)
    np.testing.assert_allclose(eyeball, np.broadcast_to(eyeball[0], eyeball.shape))
    np.testing.assert_allclose(face, np.broadcast_to(face[0], face.shape))
    assert np.linalg.norm(eyeball[0] - white) < np.linalg.norm(eyeball[0] - skin)
    assert np.linalg.norm(face[0] - skin) < np.linalg.norm(face[0] - white)
    assert np.asarray(start.light)[0, 0] == np.float32(AMBIENT_SH)
    assert start.texture_coeffs.shape[0] > 0 and not np.any(np.asarray(start.texture_coeffs))  # the smooth albedo's
    no_smooth = dataclasses.replace(config, albedo_cell=None)
    assert start_appearance(layout, _targets(size, image), no_smooth).texture_coeffs.shape == (0,)
    plain = np.asarray(start_appearance(load_uv_layout(masks=False), _targets(size, image), config).texels)
    np.testing.assert_allclose(plain, np.broadcast_to(plain[0, 0], plain.shape))


@pytest.mark.skipif(not (shared_flame_dir() / "FLAME_masks.pkl").is_file(), reason="no FLAME_masks.pkl")
def test_the_smooth_albedo_is_mirror_symmetric_and_covers_only_the_face_and_forehead():
    from flamejax.render import SMOOTH_ALBEDO_UNIT, smooth_albedo, smooth_albedo_size

    size, layout = 64, load_uv_layout()
    fields = np.asarray(smooth_albedo(layout, 0.2, size).fields)
    regions = np.asarray(texel_regions(layout.uv, layout.face_uv_index, layout.face_region, size))
    inside = (regions == REGION_FACE) | (regions == REGION_FOREHEAD)
    assert fields.shape == (size, size, smooth_albedo_size(layout, 0.2) // 3) and not np.any(fields[~inside])
    assert np.all(fields.sum(-1)[inside] > 0.5 * SMOOTH_ALBEDO_UNIT)  # the hats cover the face
    assert np.isclose(fields.max(), SMOOTH_ALBEDO_UNIT, rtol=0.1)
    # a texel and its mirror texel (both inside) have the same fields
    centres = (np.arange(size) + 0.5) / size
    mirror = np.clip(np.round((2 * layout.mirror_u - centres) * size - 0.5).astype(int), 0, size - 1)
    both = inside & inside[:, mirror]
    np.testing.assert_allclose(fields[both], fields[:, mirror][both], atol=0.2 * SMOOTH_ALBEDO_UNIT)
    plain = np.asarray(smooth_albedo(load_uv_layout(masks=False), 0.2, size).fields)
    assert np.all(plain.sum(-1) > 0.5 * SMOOTH_ALBEDO_UNIT)  # no regions: the whole map


def test_mirrored_columns_reflect_about_the_axis_between_texels():
    columns = jnp.broadcast_to(jnp.arange(8, dtype=jnp.float32)[None, :, None], (2, 8, 1))
    np.testing.assert_allclose(np.asarray(_mirrored_columns(columns, 0.5))[0, :, 0], np.arange(8)[::-1])
    # axis a quarter texel left of the middle: column j's mirror is 6.5 - j (clamped at the border)
    np.testing.assert_allclose(np.asarray(_mirrored_columns(columns, 0.5 - 0.25 / 8))[0, :, 0],
                               np.clip(6.5 - np.arange(8), 0, 7))


def test_asymmetry_counts_mirrored_pairs_of_one_modelled_region():
    regions = np.full((4, 8), REGION_FACE, np.int32)
    regions[:, 0] = REGION_OTHER  # its mirror, column 7, pairs with nothing
    regions[0, 6] = REGION_EYEBALL  # mirror of a skin texel: not a pair
    texels = np.full((4, 8, 3), 0.5, np.float32)
    assert float(_asymmetry(jnp.asarray(texels), 0.5, _mirror_pairs(jnp.asarray(regions), 0.5))) == 0.0
    texels[:, 7] = 0.9  # unpaired column
    texels[0, 1] = 0.1  # its mirror is the eyeball texel
    assert float(_asymmetry(jnp.asarray(texels), 0.5, _mirror_pairs(jnp.asarray(regions), 0.5))) == 0.0
    assert float(_asymmetry(jnp.asarray(texels), 0.5, None)) > 0.0
    texels[2, 2] = 0.8  # a skin texel unlike its mirror (2, 5)
    both = 2 * 3 * 0.3**2 / (4 * 6 - 2)
    pairs = _mirror_pairs(jnp.asarray(regions), 0.5)
    np.testing.assert_allclose(float(_asymmetry(jnp.asarray(texels), 0.5, pairs)), both, rtol=1e-5)


def test_texel_prior_adds_symmetry_only_on_a_mirrored_layout():
    texels = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 8, 3)), jnp.float32)
    uv = jnp.zeros((3, 2), jnp.float32)
    faces = jnp.zeros((1, 3), jnp.int32)
    mirrored, plain = UVLayout(uv, faces, faces, None, 0.5), UVLayout(uv, faces, faces)
    config = PhotometricConfig(texel_smoothness=2.0, texel_symmetry=3.0)
    smooth = 2.0 * float(_smoothness(texels, None))
    np.testing.assert_allclose(float(texel_prior(plain, config)(texels)), smooth, rtol=1e-6)
    np.testing.assert_allclose(float(texel_prior(mirrored, config)(texels)),
                               smooth + 3.0 * float(_asymmetry(texels, 0.5, None)), rtol=1e-6)


def test_uv_mirror_axis_needs_a_symmetric_mesh_and_layout():
    # a strip of quads mirrored about x = 2 (a shifted copy, as in FLAME's UV OBJ), uvs mirrored about u = 0.45
    xs = np.array([0.0, 1.0, 1.5, 2.5, 3.0, 4.0])
    vertices = np.array([[x, y, 0.0] for y in (0.0, 1.0) for x in xs])
    uv = np.array([[0.45 + (x - 2.0) * 0.1, 0.2 + 0.5 * y] for y in (0.0, 1.0) for x in xs])
    quads = [(i, i + 1, i + 7, i + 6) for i in range(5)]
    faces = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])
    corners = np.stack([faces, faces], -1)
    assert uv_mirror_axis(vertices, uv, corners) == pytest.approx(0.45)
    skewed = uv.copy()
    skewed[:, 0] += 0.05 * skewed[:, 1]  # not mirrored at one v
    assert uv_mirror_axis(vertices, skewed, corners) is None
    lopsided = vertices.copy()
    right = vertices[:, 0] > 2.0
    lopsided[right, 0] = 2.0 + (vertices[right, 0] - 2.0) * 1.5  # the right half stretched: no mirror plane
    assert uv_mirror_axis(lopsided, uv, corners) is None


def test_flame_uv_layout_is_mirrored_about_its_middle():
    layout = load_uv_layout(masks=False)
    assert layout.mirror_u is not None and abs(layout.mirror_u - 0.5) < 0.01


def test_uv_layout_without_vertices_has_no_axis_and_a_broken_vertex_line_is_named(tmp_path):
    lines = ["vt 0.1 0.2", "vt 0.9 0.2", "vt 0.5 0.8", "f 1/1 2/2 3/3"]
    plain = tmp_path / "plain.obj"
    plain.write_text("\n".join(lines) + "\n")
    assert load_uv_layout(plain, masks=False).mirror_u is None
    broken = tmp_path / "broken.obj"
    broken.write_text("\n".join(["v 0.0 1.0"] + lines) + "\n")
    with pytest.raises(ValueError, match="broken.obj: a vertex needs x, y and z"):
        load_uv_layout(broken, masks=False)
