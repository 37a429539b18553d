"""models.scale: each model's distance-to-confidence mapping, monotonic; FaceNet's matches its table."""

from __future__ import annotations

import numpy as np
import pytest

from facebatch.models.catalog import FACENET_SCALE, MODELS
from facebatch.models.scale import NAME_CONFIDENCE, DistanceScale


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_has_a_scale_whose_confidence_falls_with_distance(name):
    scale = MODELS[name].scale
    assert scale is not None and scale.measured
    c = scale.confidence(np.linspace(0.0, 2.0, 2001))
    assert np.all(np.diff(c) <= 0) and c[0] > 0.99 and c[-1] < 1e-3
    assert np.all(np.diff(scale.confidence(np.linspace(scale.midpoint - 0.3, scale.midpoint + 0.3, 601))) < 0)
    # The cut names less than verify accepts: a suggestion in a library needs more than a 1:1 "same".
    assert scale.name_distance < scale.verify_threshold
    assert scale.merge_distance < scale.member_distance


@pytest.mark.parametrize(("distance", "expected"), [(0.70, 0.996), (0.75, 0.982), (0.80, 0.926), (0.838, 0.80),
                                                    (0.85, 0.734), (0.884, 0.50), (0.90, 0.382), (0.95, 0.121),
                                                    (1.00, 0.030)])
def test_facenet_keeps_the_mapping_its_libraries_were_tuned_with(distance, expected):
    assert float(FACENET_SCALE.confidence(distance)) == pytest.approx(expected, abs=0.006)


def test_the_cut_is_one_distance():
    assert FACENET_SCALE.name_distance == pytest.approx(0.838, abs=5e-4)
    assert float(FACENET_SCALE.confidence(FACENET_SCALE.name_distance)) == pytest.approx(NAME_CONFIDENCE)
    assert FACENET_SCALE.distance_at(0.5) == pytest.approx(FACENET_SCALE.midpoint)
    assert FACENET_SCALE.cut_distance(0.0) == 2.0 and FACENET_SCALE.cut_distance(1.0) == -1.0
    with pytest.raises(ValueError):
        FACENET_SCALE.distance_at(1.0)


def test_a_scale_round_trips_through_json_and_refuses_nonsense():
    assert DistanceScale.from_json(FACENET_SCALE.to_json()) == FACENET_SCALE
    with pytest.raises(ValueError):
        DistanceScale(slope=10, midpoint=0.5, verify_threshold=2.5, member_distance=0.5, merge_distance=0.4)


def test_verify_answers_1_to_1_and_says_what_a_library_would():
    from facebatch.people.verification import VerifyResult

    result = VerifyResult(None, None, 0.9, FACENET_SCALE.verify_threshold, FACENET_SCALE)  # type: ignore[arg-type]
    assert result.same and result.line() == (
        "same person: distance 0.9000 <= threshold 1.1080; as a suggestion in a library this distance has "
        "confidence 0.38 (it would not name a face)")
    unmeasured = VerifyResult(None, None, 0.9, 1.0, None)  # type: ignore[arg-type]
    assert unmeasured.line() == "same person: distance 0.9000 <= threshold 1.0000; these weights have no measured confidence"
