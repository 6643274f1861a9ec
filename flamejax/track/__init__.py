"""Video tracking and several photographs of one person: one identity, per-frame motion, fitted jointly."""

from flamejax.track._joint import (FrameStates, JointConfig, JointResult, SamePersonResult, TemporalPrior,
                                   fit_joint, fit_same_person, temporal_loss, with_identity)

__all__ = ["FrameStates", "JointConfig", "JointResult", "SamePersonResult", "TemporalPrior", "fit_joint",
           "fit_same_person", "temporal_loss", "with_identity"]
