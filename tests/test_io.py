"""Atomic writes and mesh export."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from flamejax.io import atomic_path, export_mesh, write_json


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = write_json(tmp_path / "result.json", {"status": "ok"})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            open(tmp, "w").write('{"status": "half')
            raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n  "status": "ok"\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary left behind


def test_textured_export_round_trips(tmp_path):
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]], float)
    face_uv = np.array([[0, 1, 2], [4, 2, 3]])  # vertex 0 has two uvs: a seam
    texture = np.random.default_rng(0).uniform(size=(8, 8, 3))
    export_mesh(tmp_path / "m.obj", vertices, faces, uv=uv, face_uv=face_uv, texture=texture)
    assert (tmp_path / "m.mtl").is_file() and (tmp_path / "m.png").is_file()
    loaded = trimesh.load(tmp_path / "m.obj", force="mesh", process=False)
    assert len(loaded.vertices) == 5  # the seam vertex is split
    glb = trimesh.load(export_mesh(tmp_path / "m.glb", vertices, faces, uv=uv, face_uv=face_uv, texture=texture),
                       force="mesh", process=False)
    assert glb.visual.uv.shape == (5, 2)
    with pytest.raises(ValueError, match="unsupported mesh format"):
        export_mesh(tmp_path / "m.stl", vertices, faces)
