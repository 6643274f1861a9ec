"""The Fitter's second landmark fit for photographs whose two MediaPipe looks disagree throughout."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import flamejax.fitter as fitter_module
from flamejax.fit import LOOK_DISAGREEMENT, look_disagreement, quick_config, target_agreement
from flamejax.fitter import Fitter
from flamejax.perception import preprocess
from tests.conftest import SHARED, folded_look, requires_flame

pytestmark = [requires_flame, pytest.mark.skipif(not (SHARED / "images").is_dir(), reason="no ../shared/images")]


def test_only_the_photograph_with_disagreeing_looks_is_fitted_again(flame_model, monkeypatch):
    photo = preprocess(SHARED / "images" / "ffhq_00000.png")
    assert look_disagreement(photo.points478, photo.mirrored478) < LOOK_DISAGREEMENT
    folded = dataclasses.replace(photo, mirrored478=folded_look(photo.points478, 0.8))
    assert look_disagreement(folded.points478, folded.mirrored478) > LOOK_DISAGREEMENT
    calls = []
    real_fit = fitter_module.fit_landmarks_batch

    confidences = []

    def counting_fit(model, targets, config, start=None):
        calls.append(np.asarray(targets.mediapipe))
        result = real_fit(model, targets, config, start)
        confidences.append(np.asarray(result.confidence))
        return result

    monkeypatch.setattr(fitter_module, "fit_landmarks_batch", counting_fit)
    fitter = Fitter.create(flame_model, quick_config(rigid_steps=60, landmark_steps=40), batch_size=2,
                           uv_layout=None)
    agreeing = fitter.fit_batch([photo], ["photo"])
    assert len(calls) == 1
    assert "detector" not in agreeing[0].reason  # a real face: BlazeFace is sure of it
    fit = agreeing[0]
    for score, doubted in ((None, False), (0.9, False), (0.55, True)):
        verdict, reason = fitter_module.judge(fit.result, fit.vertices, fitter.quality,
                                              fitter_module.detection_doubt(score, fitter.quality))
        assert ("detector's score 0.55" in reason and verdict == "suspect") if doubted else "detector" not in reason
        assert (fitter_module.detection_doubt(score, fitter.quality) is not None) == doubted
    assert fitter_module.detection_doubt(fitter.quality.min_detection_score, fitter.quality) is None
    # FaceMesh losing the face on its own aligned crop makes a confident detection doubtful too.
    verdict, reason = fitter_module.judge(fit.result, fit.vertices, fitter.quality,
                                          fitter_module.detection_doubt(0.9, fitter.quality, lost_on_crop=True))
    assert verdict == "suspect" and "no face again on the aligned crop" in reason and "score" not in reason
    both_doubts = fitter_module.detection_doubt(0.55, fitter.quality, lost_on_crop=True)
    assert "score 0.55" in both_doubts and "no face again" in both_doubts
    both = fitter.fit_batch([photo, folded], ["photo", "folded"])
    assert len(calls) == 3
    # The second fit moved the folded photograph's targets off the mean of its looks, and only its own.
    np.testing.assert_array_equal(calls[2][0], calls[1][0])
    assert np.abs(calls[2][1] - calls[1][1]).max() > 0.01
    # The photograph beside it keeps its first fit, the same as fitted alone.
    np.testing.assert_allclose(both[0].vertices, agreeing[0].vertices, atol=1e-5)
    assert both[1].written and np.all(np.isfinite(both[1].vertices))
    # A folded look makes the fit that leans away from it suspect, with its reason; the photograph beside is not.
    assert both[1].verdict == "suspect" and "mirror image disagree" in both[1].reason
    # Its confidence keeps the share of the face its looks agreed on, though the second fit weighs every point fully.
    agreed = float(target_agreement(fitter_module.targets_of(folded).lmk68_weight))
    assert agreed < 0.9
    assert float(both[1].result.confidence) == pytest.approx(agreed * float(confidences[2][1]), rel=1e-5)
    assert float(both[0].result.confidence) == pytest.approx(float(agreeing[0].result.confidence), abs=1e-5)
    assert "mirror image disagree" not in both[0].reason
    disagreement = fitter_module.look_disagreement_of(folded)
    assert disagreement == look_disagreement(folded.points478, folded.mirrored478)
    assert fitter_module.look_disagreement_of(dataclasses.replace(folded, annotated68=folded.lmk68)) == 0.0
    assert fitter_module.detection_doubt(0.9, fitter.quality, look_disagreement=LOOK_DISAGREEMENT) is None
    doubt = fitter_module.detection_doubt(0.9, fitter.quality, look_disagreement=disagreement)
    assert f"disagree by {disagreement:.2f}" in doubt and "something else for a face" not in doubt
    lenient = dataclasses.replace(fitter.quality, max_look_disagreement=1.0)
    assert fitter_module.detection_doubt(0.9, lenient, look_disagreement=disagreement) is None
    # An item's own facts: the folded photograph's looks, the real one's none.
    assert "mirror image disagree" in fitter_module.detection_doubt_of(folded, fitter.quality)
    assert fitter_module.detection_doubt_of(photo, fitter.quality) is None
    assert "score 0.55" in fitter_module.detection_doubt_of(dataclasses.replace(photo, confidence=0.55))
