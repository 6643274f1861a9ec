"""Writing results: meshes (OBJ/PLY/GLB), parameter files, pictures; every write is atomic."""

from flamejax.io._atomic import atomic_path, write_image, write_json, write_npz
from flamejax.io._mesh import MESH_FORMATS, build_trimesh, export_mesh

__all__ = ["MESH_FORMATS", "atomic_path", "build_trimesh", "export_mesh", "write_image", "write_json", "write_npz"]
