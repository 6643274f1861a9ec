"""Mesh export: OBJ (written here, vertex order kept), PLY and GLB (through trimesh), with UVs and a texture.

What each format holds, for a FLAME mesh of 5023 vertices:

* OBJ: the 5023 ``v`` lines in the order given (FLAME's vertex ids), then one ``vt`` line per row of the UV layout
  and ``f v/vt`` faces, as DECA writes it; with a texture, ``<stem>.mtl`` (``Kd 1 1 1``, ``map_Kd``) and
  ``<stem>.png`` beside it.
* PLY: the vertices in the order given, with smooth vertex normals (no UVs).
* GLB: one vertex per distinct (vertex, uv) corner pair, since glTF stores one UV per vertex (5118 for FLAME's
  layout). The custom vertex attribute ``_FLAME_INDEX`` (float32 scalar, exact integers) holds, for every GLB
  vertex, the row of the input vertices it was copied from, i.e. its FLAME vertex id; every GLB written here
  carries it, also without UVs (then it is 0, 1, 2, ...), and the mesh's ``extras`` name it
  (``flame_vertex_index_attribute``). ``NORMAL`` holds smooth (area-weighted) normals of the
  unsplit mesh, so the seams do not show; the material is white (``baseColorFactor`` 1, metallic 0, roughness 1)
  times the texture.

UVs are given as a :class:`flamejax.render.UVLayout` (v down, flamejax's convention) and converted to the files'
v-up convention by :func:`flamejax.render._texture.flip_uv_v`, the one place that does it. Vertices that are not
finite are refused with a ``ValueError``: no exporter writes NaN.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from flamejax.io._atomic import atomic_path, write_image

MESH_FORMATS = ("obj", "ply", "glb")
FLAME_INDEX_ATTRIBUTE = "_FLAME_INDEX"


def _split_uv_seams(faces: np.ndarray, face_uv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One output vertex per distinct (vertex, uv) corner pair: (source vertex ids, uv rows, new faces)."""
    pairs = np.stack([faces.ravel(), face_uv.ravel()], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return unique[:, 0], unique[:, 1], inverse.reshape(faces.shape)


def _uint8_image(texture) -> np.ndarray:
    tex = np.asarray(texture)
    if tex.dtype != np.uint8:
        tex = (np.clip(tex, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return tex


def _smooth_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    from flamejax.render import vertex_normals

    return np.asarray(vertex_normals(vertices.astype(np.float32), faces.astype(np.int32)), np.float64)


def _checked_inputs(path: Path, vertices, faces, uv_layout):
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"{path}: expected vertices (V, 3) and faces (F, 3), got {vertices.shape} and {faces.shape}")
    bad = ~np.isfinite(vertices).all(axis=1)
    if bad.any():
        raise ValueError(f"{path}: {int(bad.sum())} of {len(vertices)} vertices are not finite (NaN or inf); "
                         "refusing to write a broken mesh (was the fit marked failed?)")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(f"{path}: faces refer to vertices outside 0..{len(vertices) - 1}")
    if uv_layout is not None and not np.array_equal(np.asarray(uv_layout.faces), faces):
        raise ValueError(f"{path}: the UV layout's faces differ from the mesh's faces (not the same topology)")
    return vertices, faces


def _obj_text(path: Path, vertices, faces, uv_layout, vertex_colors, material: str | None) -> str:
    from flamejax.render._texture import flip_uv_v

    out = io.StringIO()
    out.write(f"# flamejax: {len(vertices)} vertices in the given order (FLAME's vertex ids), {len(faces)} faces\n")
    if material is not None:
        out.write(f"mtllib {material}.mtl\nusemtl {material}\n")
    if vertex_colors is None:
        np.savetxt(out, vertices, fmt="v %.8g %.8g %.8g")
    else:
        colors = np.asarray(vertex_colors, np.float64)[:, :3]
        colors = colors / 255.0 if np.asarray(vertex_colors).dtype == np.uint8 else colors
        np.savetxt(out, np.concatenate([vertices, colors], axis=1), fmt="v %.8g %.8g %.8g %.6g %.6g %.6g")
    if uv_layout is None:
        np.savetxt(out, faces + 1, fmt="f %d %d %d")
    else:
        np.savetxt(out, flip_uv_v(np.asarray(uv_layout.uv, np.float64)), fmt="vt %.8g %.8g")
        corners = np.stack([faces + 1, np.asarray(uv_layout.face_uv_index, np.int64) + 1], axis=-1)
        np.savetxt(out, corners.reshape(len(faces), 6), fmt="f %d/%d %d/%d %d/%d")
    return out.getvalue()


def _write_obj(path: Path, vertices, faces, uv_layout, texture, vertex_colors) -> None:
    material = None
    if texture is not None:
        if uv_layout is None:
            raise ValueError(f"{path}: a texture needs a UV layout")
        material = path.stem
        write_image(path.with_suffix(".png"), _uint8_image(texture))
        with atomic_path(path.with_suffix(".mtl")) as tmp:
            Path(tmp).write_text(f"newmtl {material}\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\n"
                                 f"map_Kd {path.stem}.png\n")
    text = _obj_text(path, vertices, faces, uv_layout, vertex_colors, material)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def build_trimesh(vertices, faces, uv_layout=None, texture=None, vertex_colors=None, material_name="material"):
    """The ``trimesh.Trimesh`` written to GLB/PLY (see the module docstring): UV seams split when ``uv_layout``
    is given, smooth normals of the unsplit mesh, ``_FLAME_INDEX`` per vertex, a white PBR material."""
    import trimesh
    from PIL import Image

    from flamejax.render._texture import flip_uv_v

    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    normals = _smooth_normals(vertices, faces)
    if uv_layout is None:
        source, out_faces, visual = np.arange(len(vertices)), faces, None
        if vertex_colors is not None:
            visual = trimesh.visual.ColorVisuals(vertex_colors=vertex_colors)
    else:
        source, uv_rows, out_faces = _split_uv_seams(faces, np.asarray(uv_layout.face_uv_index, np.int64))
        image = None if texture is None else Image.fromarray(_uint8_image(texture))
        material = trimesh.visual.material.PBRMaterial(
            name=material_name, baseColorFactor=[1.0, 1.0, 1.0, 1.0], baseColorTexture=image,
            metallicFactor=0.0, roughnessFactor=1.0)
        visual = trimesh.visual.TextureVisuals(uv=flip_uv_v(np.asarray(uv_layout.uv, np.float64)[uv_rows]),
                                               material=material)
    return trimesh.Trimesh(vertices[source], out_faces, vertex_normals=normals[source], visual=visual,
                           vertex_attributes={FLAME_INDEX_ATTRIBUTE: source.astype(np.float32)},
                           metadata={"flame_vertex_index_attribute": FLAME_INDEX_ATTRIBUTE,
                                     "flame_vertex_index_meaning": "per vertex: the input (FLAME) vertex id it copies"},
                           process=False)


def export_mesh(path: str | Path, vertices, faces, uv_layout=None, texture=None, vertex_colors=None) -> Path:
    """Write a mesh as OBJ (+MTL/PNG when textured), PLY or GLB, chosen by the file suffix; every file atomic.

    Args:
      vertices: (V, 3) finite positions. faces: (F, 3) vertex indices.
      uv_layout: optional :class:`flamejax.render.UVLayout` (v down) whose ``faces`` equal ``faces``; PLY ignores it.
      texture: optional (S, S, 3) image (uint8, or float in [0, 1]), row 0 at the top; needs ``uv_layout``.
      vertex_colors: optional (V, 3|4) colours (uint8, or float in [0, 1]) for meshes without a texture.

    Raises:
      ValueError: unknown suffix, non-finite vertices, faces out of range, a layout of another topology.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in MESH_FORMATS:
        raise ValueError(f"{path}: unsupported mesh format {fmt!r}; choose one of {MESH_FORMATS}")
    vertices, faces = _checked_inputs(path, vertices, faces, uv_layout)
    if fmt == "obj":
        _write_obj(path, vertices, faces, uv_layout, texture, vertex_colors)
        return path
    if fmt == "ply":
        mesh = build_trimesh(vertices, faces, vertex_colors=vertex_colors)
        data = mesh.export(file_type="ply", vertex_normal=True, include_attributes=False)
    else:
        mesh = build_trimesh(vertices, faces, uv_layout, texture, vertex_colors, material_name=path.stem)
        data = mesh.export(file_type="glb", include_normals=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return path
