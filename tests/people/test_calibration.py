"""people.calibration: one distance-to-confidence mapping, monotonic, matching its table."""

from __future__ import annotations

import numpy as np
import pytest

from facebatch.people import calibration
from facebatch.people.calibration import NAME_CONFIDENCE, NAME_DISTANCE, confidence, distance_at


def test_confidence_falls_with_distance_from_1_to_0():
    d = np.linspace(0.0, 2.0, 2001)
    c = confidence(d)
    assert np.all(np.diff(c) < 0) and c[0] > 0.999999 and c[-1] < 1e-6


@pytest.mark.parametrize(("distance", "expected"), [(0.70, 0.996), (0.75, 0.982), (0.80, 0.926), (0.838, 0.80),
                                                    (0.85, 0.734), (0.884, 0.50), (0.90, 0.382), (0.95, 0.121),
                                                    (1.00, 0.030)])
def test_the_table_in_the_docstring_is_the_mapping(distance, expected):
    assert float(confidence(distance)) == pytest.approx(expected, abs=0.006)
    assert f"{distance:.3f}".rstrip("0").rstrip(".") in calibration.__doc__ or f"{distance:.2f}" in calibration.__doc__


def test_the_cut_is_one_distance():
    assert NAME_DISTANCE == pytest.approx(0.838, abs=5e-4)
    assert float(confidence(NAME_DISTANCE)) == pytest.approx(NAME_CONFIDENCE)
    assert distance_at(0.5) == pytest.approx(calibration.MIDPOINT)
    with pytest.raises(ValueError):
        distance_at(1.0)


def test_verify_answers_1_to_1_and_says_what_a_library_would():
    from facebatch.people.verification import DEFAULT_THRESHOLD, VerifyResult

    assert DEFAULT_THRESHOLD == 1.108  # the 1:1 accuracy optimum on LFW pairs
    result = VerifyResult(None, None, 0.9, DEFAULT_THRESHOLD)  # type: ignore[arg-type]
    assert result.same and result.line() == (
        "same person: distance 0.9000 <= threshold 1.1080; as a suggestion in a library this distance has "
        "confidence 0.38 (it would not name a face)")
