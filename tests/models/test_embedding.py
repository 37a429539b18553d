"""models.embedding and models.catalog: the seam between faces and models (tags, centring, joining)."""

from __future__ import annotations

import numpy as np
import pytest

from facebatch.errors import UsageError
from facebatch.models.catalog import MODELS, model_named
from facebatch.models.embedding import (combine, measured_scale, model_of_tag, model_tag, same_model, same_weights,
                                        split_model_tag)
from facebatch.models.means import population_mean, shipped_means
from facebatch.models.weights import CASIA_WEBFACE_SHA256, Weights

CASIA = Weights("casia-webface", None, CASIA_WEBFACE_SHA256)  # type: ignore[arg-type]
OTHER = Weights("vggface2", None, "0123456789ab" * 5)  # type: ignore[arg-type]


def test_facenet_keeps_the_tag_libraries_were_made_with():
    tag = model_tag(model_named("facenet"), CASIA, "onnx-int8")
    assert tag == f"casia-webface@{CASIA_WEBFACE_SHA256[:12]}/box-margin44-182-centre160/onnx-int8"
    assert model_of_tag(tag).name == "facenet" and split_model_tag(tag)[1] == "onnx-int8"
    assert model_of_tag("casia-webface@9549dbb482ce").name == "facenet"  # from before variants


@pytest.mark.parametrize("name", ["facenet-centred", "sface", "facenet+sface"])
def test_every_other_model_names_itself_its_nets_and_its_means(name):
    model = model_named(name)
    tag = model_tag(model, CASIA, "onnx-int8")
    assert model_of_tag(tag) is model and tag.startswith(f"{name}[") and ";mean@" in tag
    other_runtime = model_tag(model, CASIA, "torch-fp32")
    assert same_weights(tag, other_runtime)
    assert not same_model(tag, other_runtime)  # FaceNet's runtime, or SFace's precision, re-embeds
    if "facenet" not in model.nets:  # SFace runs in ONNX Runtime whatever --runtime says
        assert split_model_tag(other_runtime)[1] == "onnx-fp32" == split_model_tag(model_tag(model, CASIA, "onnx-fp32"))[1]
    assert not same_weights(tag, model_tag(model_named("facenet"), CASIA, "onnx-int8"))
    assert measured_scale(tag) is model.scale


def test_a_scale_holds_only_for_the_weights_it_was_measured_with():
    assert measured_scale(model_tag(model_named("facenet"), OTHER, "onnx-int8")) is None
    with pytest.raises(UsageError, match="centred models need the default casia-webface weights"):
        model_tag(model_named("facenet-centred"), OTHER)


def test_the_shipped_means_are_one_per_net_and_say_how_they_were_made():
    means = shipped_means()
    assert "lfw-strangers" in str(means["how"])
    for net, dim in (("facenet", 512), ("sface", 128)):
        mean = population_mean(net, CASIA)
        assert mean.shape == (dim,) and 0.05 < np.linalg.norm(mean) < 0.9  # a shared direction, not a face


def test_joined_vectors_are_unit_and_each_part_is_centred_then_weighs_the_same():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 512)).astype(np.float32)
    b = rng.normal(size=(5, 128)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    mean = np.full(512, 0.01, np.float32)
    x = combine([a, b], [mean, None])
    assert x.shape == (5, 640)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)
    centred = (a - mean) / np.linalg.norm(a - mean, axis=1, keepdims=True)
    np.testing.assert_allclose(x[:, :512] * np.sqrt(2), centred, atol=1e-6)
    np.testing.assert_allclose(x[:, 512:] * np.sqrt(2), b, atol=1e-6)
    np.testing.assert_allclose(combine([a], [None]), a)


def test_the_catalogue_knows_each_nets_size_as_the_net_declares_it():
    from facebatch.models import facenet, sface
    from facebatch.models.catalog import NET_DIMS

    assert NET_DIMS == {"facenet": facenet.DIM, "sface": sface.DIM}


def test_every_model_declares_its_dimension_and_what_it_is():
    assert {m.name: m.dim for m in MODELS.values()} == {"facenet": 512, "facenet-centred": 512, "sface": 128,
                                                        "facenet+sface": 640}
    assert all(m.about for m in MODELS.values())
    with pytest.raises(UsageError, match="unknown model 'nope'"):
        model_named("nope")
