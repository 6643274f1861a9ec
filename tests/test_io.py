"""Atomic writes and mesh export: vertex order, UVs, normals, materials, refusal of broken meshes."""

from __future__ import annotations

import json
import os
import stat
import struct
import threading
from concurrent.futures import ThreadPoolExecutor

import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

from flamejax.io import FLAME_INDEX_ATTRIBUTE, atomic_path, export_mesh, write_json, write_npz
from flamejax.render import UVLayout, vertex_normals
from flamejax.render._texture import flip_uv_v

from conftest import requires_flame, shared_flame_dir


def read_glb(path) -> tuple[dict, bytes]:
    """The JSON and BIN chunks of a binary glTF file, checked against the GLB container layout."""
    data = path.read_bytes()
    magic, version, length = struct.unpack("<4sII", data[:12])
    json_length, json_type = struct.unpack("<I4s", data[12:20])
    assert (magic, version, length, json_type) == (b"glTF", 2, len(data), b"JSON")
    bin_start = 20 + json_length
    bin_length, bin_type = struct.unpack("<I4s", data[bin_start:bin_start + 8])
    assert bin_type == b"BIN\0" and bin_start + 8 + bin_length == len(data)
    return json.loads(data[20:bin_start]), data[bin_start + 8:]


def glb_attribute(gltf: dict, blob: bytes, name: str) -> np.ndarray:
    """One vertex attribute of the first primitive, decoded from the BIN chunk."""
    accessor = gltf["accessors"][gltf["meshes"][0]["primitives"][0]["attributes"][name]]
    view = gltf["bufferViews"][accessor["bufferView"]]
    dtype = {5126: np.float32, 5123: np.uint16, 5125: np.uint32}[accessor["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}[accessor["type"]]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    assert view.get("byteStride", width * np.dtype(dtype).itemsize) == width * np.dtype(dtype).itemsize
    return np.frombuffer(blob, dtype, accessor["count"] * width, start).reshape(accessor["count"], width)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = write_json(tmp_path / "result.json", {"status": "ok"})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            open(tmp, "w").write('{"status": "half')
            raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n  "status": "ok"\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary left behind


def test_atomic_writes_from_threads_never_touch_the_umask(tmp_path, monkeypatch):
    """os.umask is process-wide: writers in a thread pool must not set it (another thread's file would get 0o777)."""
    def forbidden(mask):
        raise AssertionError("atomic_path changed the process umask")

    monkeypatch.setattr(os, "umask", forbidden)
    barrier = threading.Barrier(8)

    def write(i):
        barrier.wait()
        return [write_npz(tmp_path / f"{i}_{k}.npz", x=np.full(100, i * 10 + k)) for k in range(5)]

    with ThreadPoolExecutor(8) as pool:
        paths = [p for batch in pool.map(write, range(8)) for p in batch]
    monkeypatch.undo()
    mask = os.umask(0o022)
    os.umask(mask)
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask
        i, k = map(int, p.stem.split("_"))
        assert np.load(p)["x"][0] == i * 10 + k
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)


def _quad():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0, 1], [1, 1], [1, 0], [0, 0], [0.5, 0.5]], np.float32)  # v down, as UVLayout stores it
    face_uv = np.array([[0, 1, 2], [4, 2, 3]])  # vertex 0 has two uvs: a seam
    layout = UVLayout(jnp.asarray(uv), jnp.asarray(face_uv, jnp.int32), jnp.asarray(faces, jnp.int32))
    return vertices, faces, layout


def test_textured_obj_keeps_vertex_order_with_separate_uvs(tmp_path):
    vertices, faces, layout = _quad()
    texture = np.random.default_rng(0).uniform(size=(8, 8, 3))
    export_mesh(tmp_path / "m.obj", vertices, faces, layout, texture)
    lines = (tmp_path / "m.obj").read_text().splitlines()
    v = np.array([[float(x) for x in line.split()[1:]] for line in lines if line.startswith("v ")])
    vt = np.array([[float(x) for x in line.split()[1:]] for line in lines if line.startswith("vt ")])
    f = [line.split()[1:] for line in lines if line.startswith("f ")]
    np.testing.assert_array_equal(v, vertices)  # the input order, no seam duplicates
    np.testing.assert_allclose(vt, flip_uv_v(np.asarray(layout.uv)), atol=1e-7)  # v up in the file
    np.testing.assert_allclose(vt[:, 1], 1.0 - np.asarray(layout.uv)[:, 1], atol=1e-7)
    assert f == [["1/1", "2/2", "3/3"], ["1/5", "3/3", "4/4"]]
    assert "mtllib m.mtl" in lines and "usemtl m" in lines
    mtl = (tmp_path / "m.mtl").read_text().splitlines()
    assert "Kd 1 1 1" in mtl and "map_Kd m.png" in mtl  # full brightness, not trimesh's 0.4
    assert (tmp_path / "m.png").is_file()
    loaded = trimesh.load(tmp_path / "m.obj", force="mesh", process=False)  # a standard reader understands it
    assert len(loaded.faces) == 2 and loaded.visual.uv is not None


def test_glb_has_normals_white_material_and_maps_back_to_input_vertices(tmp_path):
    vertices, faces, layout = _quad()
    vertices[2, 2] = 0.3  # not flat: normals differ per vertex
    texture = np.random.default_rng(0).uniform(size=(8, 8, 3))
    path = export_mesh(tmp_path / "m.glb", vertices, faces, layout, texture)
    gltf, blob = read_glb(path)
    material = gltf["materials"][0]["pbrMetallicRoughness"]
    assert material["baseColorFactor"] == [1.0, 1.0, 1.0, 1.0] and "baseColorTexture" in material
    attributes = gltf["meshes"][0]["primitives"][0]["attributes"]
    assert {"POSITION", "NORMAL", "TEXCOORD_0", FLAME_INDEX_ATTRIBUTE} <= set(attributes)
    assert gltf["accessors"][attributes[FLAME_INDEX_ATTRIBUTE]]["type"] == "SCALAR"
    assert gltf["meshes"][0]["extras"]["flame_vertex_index_attribute"] == FLAME_INDEX_ATTRIBUTE
    glb = trimesh.load(path, force="mesh", process=False)
    source = glb.vertex_attributes[FLAME_INDEX_ATTRIBUTE].ravel().astype(int)
    assert len(glb.vertices) == 5 and sorted(set(source)) == [0, 1, 2, 3]  # vertex 0 split at the seam
    np.testing.assert_allclose(glb.vertices, vertices[source], atol=1e-6)
    np.testing.assert_array_equal(glb_attribute(gltf, blob, FLAME_INDEX_ATTRIBUTE).ravel(), source)
    smooth = np.asarray(vertex_normals(jnp.asarray(vertices, jnp.float32), jnp.asarray(faces)))
    normals = glb_attribute(gltf, blob, "NORMAL")
    np.testing.assert_allclose(normals, smooth[source], atol=1e-6)  # smooth, and the seam copies share one
    np.testing.assert_allclose(glb_attribute(gltf, blob, "POSITION"), vertices[source], atol=1e-6)
    # TEXCOORD_0 (trimesh hands it back v up) matches the layout's uv of each corner
    corner_uv = flip_uv_v(np.asarray(layout.uv))[np.asarray(layout.face_uv_index)]
    np.testing.assert_allclose(glb.visual.uv[glb.faces], corner_uv, atol=1e-6)
    np.testing.assert_array_equal(source[glb.faces], faces)


def test_export_refuses_broken_meshes(tmp_path):
    vertices, faces, layout = _quad()
    broken = vertices.copy()
    broken[1, 0] = np.nan
    for name in ("m.obj", "m.glb", "m.ply"):
        with pytest.raises(ValueError, match="not finite"):
            export_mesh(tmp_path / name, broken, faces, layout)
    with pytest.raises(ValueError, match="unsupported mesh format"):
        export_mesh(tmp_path / "m.stl", vertices, faces)
    with pytest.raises(ValueError, match="outside"):
        export_mesh(tmp_path / "m.obj", vertices, faces + 1)
    with pytest.raises(ValueError, match="topology"):
        export_mesh(tmp_path / "m.glb", vertices, faces[:, ::-1], layout)
    assert list(tmp_path.iterdir()) == []


@requires_flame
def test_flame_mesh_exports(tmp_path, flame_model):
    from flamejax.render import load_uv_layout

    layout = load_uv_layout(shared_flame_dir() / "head_template_mesh.obj")
    vertices, faces = np.asarray(flame_model.v_template), np.asarray(flame_model.faces)
    texture = np.full((16, 16, 3), 0.5)
    obj = trimesh.load(export_mesh(tmp_path / "head.obj", vertices, faces, layout, texture), force="mesh",
                       process=False)
    text = (tmp_path / "head.obj").read_text()
    assert text.count("\nv ") == 5023 and text.count("\nvt ") == 5118 and text.count("\nf ") == 9976
    assert len(obj.faces) == 9976
    gltf, blob = read_glb(export_mesh(tmp_path / "head.glb", vertices, faces, layout, texture))
    source = glb_attribute(gltf, blob, FLAME_INDEX_ATTRIBUTE).ravel().astype(int)
    assert len(source) == 5118 and len(np.unique(source)) == 5023
    np.testing.assert_allclose(glb_attribute(gltf, blob, "POSITION"), vertices[source], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(glb_attribute(gltf, blob, "NORMAL"), axis=1), 1.0, atol=1e-5)
    assert gltf["materials"][0]["pbrMetallicRoughness"]["baseColorFactor"] == [1.0, 1.0, 1.0, 1.0]
    ply = trimesh.load(export_mesh(tmp_path / "head.ply", vertices, faces), process=False)
    np.testing.assert_allclose(ply.vertices, vertices, atol=1e-6)  # PLY keeps FLAME's order
    assert ply.faces.shape == (9976, 3)
