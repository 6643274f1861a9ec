"""Mesh export (OBJ, PLY, GLB) through trimesh, with UVs and a texture when given."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flamejax.io._atomic import atomic_path

MESH_FORMATS = ("obj", "ply", "glb")


def _split_uv_seams(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, face_uv: np.ndarray):
    """One output vertex per distinct (position, uv) corner pair, as trimesh stores one UV per vertex."""
    pairs = np.stack([faces.ravel(), face_uv.ravel()], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return vertices[unique[:, 0]], inverse.reshape(faces.shape), uv[unique[:, 1]], unique[:, 0]


def build_trimesh(vertices, faces, uv=None, face_uv=None, texture=None, vertex_colors=None, material_name="material"):
    """A ``trimesh.Trimesh`` of the mesh; ``uv`` (T,2) in [0,1] with v up (OBJ convention), ``face_uv`` (F,3)."""
    import trimesh
    from PIL import Image

    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    if uv is None:
        visual = None if vertex_colors is None else trimesh.visual.ColorVisuals(vertex_colors=vertex_colors)
        return trimesh.Trimesh(vertices, faces, visual=visual, process=False)
    verts, new_faces, vert_uv, _ = _split_uv_seams(vertices, faces, np.asarray(uv, np.float64), np.asarray(face_uv))
    image = None
    if texture is not None:
        tex = np.asarray(texture)
        if tex.dtype != np.uint8:
            tex = (np.clip(tex, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        image = Image.fromarray(tex)
    material = trimesh.visual.material.SimpleMaterial(image=image, name=material_name) if image is not None else None
    visual = trimesh.visual.TextureVisuals(uv=vert_uv, image=image, material=material)
    return trimesh.Trimesh(verts, new_faces, visual=visual, process=False)


def export_mesh(path: str | Path, vertices, faces, uv=None, face_uv=None, texture=None, vertex_colors=None) -> Path:
    """Write a mesh as OBJ (+MTL/PNG when textured), PLY or GLB, chosen by the file suffix; atomic.

    Args:
      vertices: (V,3) positions. faces: (F,3) vertex indices.
      uv: optional (T,2) texture coordinates, v up (OBJ convention). face_uv: (F,3) indices into ``uv``.
      texture: optional (S,S,3) image (uint8 or float in [0,1]), row 0 at the top.
    """
    import trimesh

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in MESH_FORMATS:
        raise ValueError(f"{path}: unsupported mesh format {fmt!r}; choose one of {MESH_FORMATS}")
    mesh = build_trimesh(vertices, faces, uv, face_uv, texture, vertex_colors, material_name=path.stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "obj":
        files = trimesh.exchange.obj.export_obj(
            mesh, include_texture=texture is not None, return_texture=True, mtl_name=path.stem + ".mtl",
            write_texture=False) if uv is not None else (trimesh.exchange.obj.export_obj(mesh), {})
        text, extras = files
        for name, data in extras.items():
            with atomic_path(path.parent / name) as tmp:
                Path(tmp).write_bytes(data)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text)
    else:
        with atomic_path(path) as tmp:
            mesh.export(tmp, file_type=fmt)
    return path
