"""FLAME forward pass in stages: parameters -> shaped (blendshapes, joints) -> posed (joint transforms) -> mesh.

Every function acts on one example; ``jax.vmap`` batches it. Arrays keep FLAME's head space (metres).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from flamejax._typing import Array, Float
from flamejax.flame._model import NUM_JOINTS, PARENTS, FlameModel
from flamejax.rotation import axis_angle_to_matrix

_HI = jax.lax.Precision.HIGHEST


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FlameParams:
    """FLAME's parameters for one head (vmap over a leading axis for a batch)."""

    shape: Float[Array, "n_shape"]
    """Identity coefficients beta (unit-variance prior)."""
    expression: Float[Array, "n_exp"]
    """Expression coefficients psi (unit-variance prior)."""
    head_pose: Float[Array, "3"]
    """Global rotation of the head about the root joint, axis-angle."""
    neck_pose: Float[Array, "3"]
    jaw_pose: Float[Array, "3"]
    left_eye_pose: Float[Array, "3"]
    """Rotation of the subject's left eyeball (FLAME joint 3)."""
    right_eye_pose: Float[Array, "3"]
    translation: Float[Array, "3"]
    """Added to every vertex after skinning (head space)."""

    @staticmethod
    def zeros(n_shape: int, n_expression: int, dtype=jnp.float32) -> "FlameParams":
        z3 = jnp.zeros(3, dtype)
        return FlameParams(jnp.zeros(n_shape, dtype), jnp.zeros(n_expression, dtype), z3, z3, z3, z3, z3, z3)

    @staticmethod
    def for_model(model: FlameModel) -> "FlameParams":
        return FlameParams.zeros(model.num_shape, model.num_expression, model.v_template.dtype)

    def joint_rotations(self) -> Float[Array, "5 3"]:
        """Axis-angle per joint in FLAME's order: global, neck, jaw, left eye, right eye."""
        return jnp.stack([self.head_pose, self.neck_pose, self.jaw_pose, self.left_eye_pose, self.right_eye_pose])


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FlameShaped:
    """Identity and expression applied, rest pose."""

    model: FlameModel
    vertices: Float[Array, "verts 3"]
    """Rest-pose vertices with identity and expression blendshapes."""
    joints: Float[Array, "joints 3"]
    """Rest-pose joint positions regressed from the full shaped mesh."""

    def with_pose(self, rotations: Float[Array, "joints 3"]) -> "FlamePosed":
        """Forward kinematics: world transform of each joint for axis-angle ``rotations``."""
        rot_mats = axis_angle_to_matrix(rotations)
        parents = jnp.asarray(PARENTS[1:])
        rel_joints = jnp.concatenate([self.joints[:1], self.joints[1:] - self.joints[parents]], axis=0)
        local = _rigid(rot_mats, rel_joints)
        world = [local[0]]
        for j in range(1, NUM_JOINTS):  # 5 joints: a fixed, tiny chain
            world.append(jnp.matmul(world[PARENTS[j]], local[j], precision=_HI))
        return FlamePosed(shaped=self, rot_mats=rot_mats, joint_transforms=jnp.stack(world))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FlamePosed:
    """Shaped head with joint transforms; :meth:`skin` produces the mesh."""

    shaped: FlameShaped
    rot_mats: Float[Array, "joints 3 3"]
    """Local rotation of each joint."""
    joint_transforms: Float[Array, "joints 4 4"]
    """World transform of each joint frame (rest-pose joint frames are axis-aligned at the joints)."""

    @property
    def posed_joints(self) -> Float[Array, "joints 3"]:
        return self.joint_transforms[:, :3, 3]

    def skin(self) -> "FlameMesh":
        model = self.shaped.model
        pose_feature = (self.rot_mats[1:] - jnp.eye(3, dtype=self.rot_mats.dtype)).reshape(-1)
        v_posed = self.shaped.vertices + jnp.einsum("vcp,p->vc", model.posedirs, pose_feature, precision=_HI)
        # Skinning transforms: joint world transform composed with the inverse rest-pose joint translation.
        rest = jnp.einsum("jab,jb->ja", self.joint_transforms[:, :3, :3], self.shaped.joints, precision=_HI)
        translation = self.joint_transforms[:, :3, 3] - rest
        blend_rot = jnp.einsum("vj,jab->vab", model.lbs_weights, self.joint_transforms[:, :3, :3], precision=_HI)
        blend_trans = jnp.einsum("vj,ja->va", model.lbs_weights, translation, precision=_HI)
        vertices = jnp.einsum("vab,vb->va", blend_rot, v_posed, precision=_HI) + blend_trans
        return FlameMesh(vertices=vertices, joints=self.posed_joints)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FlameMesh:
    vertices: Float[Array, "verts 3"]
    """Posed vertices, head space."""
    joints: Float[Array, "joints 3"]
    """Posed joints, head space."""


def _rigid(rot: Float[Array, "n 3 3"], trans: Float[Array, "n 3"]) -> Float[Array, "n 4 4"]:
    top = jnp.concatenate([rot, trans[:, :, None]], axis=-1)
    bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 0.0, 1.0], rot.dtype), (rot.shape[0], 1, 4))
    return jnp.concatenate([top, bottom], axis=1)


def shape_model(model: FlameModel, shape: Float[Array, "n_shape"], expression: Float[Array, "n_exp"]) -> FlameShaped:
    """Apply identity and expression blendshapes; joints come from the precomputed joint blendshapes."""
    vertices = (
        model.v_template
        + jnp.einsum("vcs,s->vc", model.shapedirs, shape, precision=_HI)
        + jnp.einsum("vce,e->vc", model.exprdirs, expression, precision=_HI)
    )
    joints = (
        model.j_template
        + jnp.einsum("jcs,s->jc", model.j_shapedirs, shape, precision=_HI)
        + jnp.einsum("jce,e->jc", model.j_exprdirs, expression, precision=_HI)
    )
    return FlameShaped(model=model, vertices=vertices, joints=joints)


def flame_forward(model: FlameModel, params: FlameParams) -> FlameMesh:
    """Posed FLAME mesh for one parameter set: blendshapes, joints, pose correctives, skinning, translation."""
    mesh = shape_model(model, params.shape, params.expression).with_pose(params.joint_rotations()).skin()
    return FlameMesh(vertices=mesh.vertices + params.translation, joints=mesh.joints + params.translation)
