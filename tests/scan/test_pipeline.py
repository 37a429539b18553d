"""A library moved to another model, runtime or precision: every face embedded again from its stored
box and landmarks, face ids and names kept, shard by shard (a killed re-embed resumes); and the
planning of it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from conftest import SAMPLE_DATA, run
from facebatch.config import ScanConfig
from facebatch.errors import UsageError
from facebatch.models.catalog import DEFAULT_MODEL, model_for, model_named
from facebatch.models.embedding import model_of_tag, split_model_tag
from facebatch.scan import driver
from facebatch.scan.driver import plan_reembed
from facebatch.store import Library, LibraryModel


def faces_by_id(library: Library) -> dict[str, dict]:
    return {row["face_id"]: row for row in library.read_faces().to_pylist()}


@pytest.fixture
def facenet_library(sample_library) -> Library:
    """The sample library moved to FaceNet: its runtime and precision are the ones options switch
    (SFace always runs in ONNX Runtime in fp32)."""
    assert run("--library", sample_library.root, "scan", SAMPLE_DATA, "--model", "facenet", "-q").exit_code == 0
    return sample_library


def test_switching_precision_re_embeds_every_face_keeping_ids_boxes_and_names(facenet_library):
    sample_library = facenet_library
    before = faces_by_id(sample_library)
    assert {split_model_tag(f["model"])[1] for f in before.values()} == {"onnx-int8"}
    named = next(iter(before))
    assert run("--library", sample_library.root, "label", "face", named, "Alice").exit_code == 0

    result = run("--library", sample_library.root, "scan", SAMPLE_DATA, "--runtime", "torch")
    assert result.exit_code == 0, result.output
    assert ("its faces are embedded again with torch-fp32 (were onnx-int8), from their stored boxes without detecting "
            "again; face ids and names are kept") in result.output
    assert "0 scanned" in result.output  # no detection: the same boxes
    after = faces_by_id(sample_library)
    assert after.keys() == before.keys()
    for face_id, face in after.items():
        old = before[face_id]
        assert split_model_tag(face["model"])[1] == "torch-fp32"
        assert face["box"] == old["box"] and face["face_index"] == old["face_index"] and face["path"] == old["path"]
        assert float(np.dot(face["embedding"], old["embedding"])) >= 0.99
    assert json.loads(sample_library.info_path.read_text())["model"] == next(iter(after.values()))["model"]
    labels = sample_library.read_labels().to_pylist()
    assert [(r["face_id"], r["value"]) for r in labels if r["active"]] == [(named, "Alice")]

    again = run("--library", sample_library.root, "scan", SAMPLE_DATA, "--runtime", "torch")
    assert "embedded again" not in again.output and "11 unchanged" in again.output


def test_sface_follows_precision_but_not_facenets_runtime(sample_library):
    """SFace alone runs in int8 by default; --precision fp32 embeds it again in fp32 and says how to
    stay; --runtime torch then changes nothing (SFace runs in ONNX Runtime either way)."""
    assert {split_model_tag(f["model"])[1] for f in faces_by_id(sample_library).values()} == {"onnx-int8"}
    again = run("--library", sample_library.root, "scan", SAMPLE_DATA, "--precision", "fp32")
    assert again.exit_code == 0 and "11 unchanged" in again.output
    assert "embedded again with onnx-fp32 (were onnx-int8; `--precision int8` keeps them)" in again.output
    assert {split_model_tag(f["model"])[1] for f in faces_by_id(sample_library).values()} == {"onnx-fp32"}
    torch = run("--library", sample_library.root, "scan", SAMPLE_DATA, "--runtime", "torch")
    assert torch.exit_code == 0 and "embedded again" not in torch.output and "11 unchanged" in torch.output


def as_made_with_sface_in_fp32(library: Library) -> str:
    """The tags a facenet+sface library had when its SFace ran in fp32 beside an int8 FaceNet
    (`.../onnx-int8`), on its faces and in library.json; returns that tag."""
    import pyarrow.parquet as pq

    info = json.loads(library.info_path.read_text())
    head, variant = split_model_tag(info["model"])
    assert variant == "onnx-int8-sface-int8"
    legacy = f"{head}/onnx-int8"
    for part in library.faces_dir.glob("part-*.parquet"):
        table = pq.read_table(part)
        tags = pa.array([legacy] * table.num_rows, pa.string())
        pq.write_table(table.set_column(table.schema.get_field_index("model"), "model", tags), part)
    library.info_path.write_text(json.dumps({**info, "model": legacy}))
    return legacy


def test_facenet_sface_moves_to_sface_in_int8_keeping_faces_and_names(sample_library):
    assert run("--library", sample_library.root, "scan", SAMPLE_DATA, "--model", "facenet+sface", "-q").exit_code == 0
    legacy = as_made_with_sface_in_fp32(sample_library)
    before = faces_by_id(sample_library)
    named = next(iter(before))
    assert run("--library", sample_library.root, "label", "face", named, "Alice").exit_code == 0
    photo = SAMPLE_DATA / "people" / "barack_obama" / "1.jpg"
    refused = run("--library", sample_library.root, "identify", photo)
    assert refused.exit_code != 0
    assert ("holds embeddings made with onnx-int8, which this version no longer makes: run `facebatch scan` to "
            "embed them again (names are kept)") in refused.output

    result = run("--library", sample_library.root, "scan", SAMPLE_DATA)
    assert result.exit_code == 0, result.output
    # No `--precision` brings the old variant back, so none is offered.
    assert "embedded again with onnx-int8-sface-int8 (were onnx-int8), from their stored boxes" in result.output
    after = faces_by_id(sample_library)
    assert after.keys() == before.keys() and legacy not in {f["model"] for f in after.values()}
    assert {split_model_tag(f["model"])[1] for f in after.values()} == {"onnx-int8-sface-int8"}
    labels = sample_library.read_labels().to_pylist()
    assert [(r["face_id"], r["value"]) for r in labels if r["active"]] == [(named, "Alice")]
    assert run("--library", sample_library.root, "identify", photo).exit_code == 0


def test_a_killed_re_embed_resumes(facenet_library, monkeypatch):
    sample_library = facenet_library
    before = faces_by_id(sample_library)
    write = driver._write_reembedded
    written = []

    def killed_after_one_shard(*args, **kwargs):
        if written:
            raise KeyboardInterrupt  # as a kill: no further part, no closing reconcile
        written.append(write(*args, **kwargs))

    monkeypatch.setattr(driver, "_write_reembedded", killed_after_one_shard)
    result = run("--library", sample_library.root, "scan", SAMPLE_DATA, "--precision", "fp32", "--shard-size", "4")
    assert result.exit_code != 0 and written
    variants = [split_model_tag(f["model"])[1] for f in faces_by_id(sample_library).values()]
    assert 0 < variants.count("onnx-fp32") < len(before) and len(variants) == len(before)

    monkeypatch.setattr(driver, "_write_reembedded", write)
    result = run("--library", sample_library.root, "scan", SAMPLE_DATA, "--precision", "fp32")
    assert result.exit_code == 0, result.output
    after = faces_by_id(sample_library)
    assert after.keys() == before.keys()
    assert {split_model_tag(f["model"])[1] for f in after.values()} == {"onnx-fp32"}


def as_made_before_models_had_names(library: Library) -> None:
    """library.json as facebatch wrote it before the model seam: the tag alone."""
    info = json.loads(library.info_path.read_text())
    library.info_path.write_text(json.dumps({k: v for k, v in info.items() if k not in ("embedding", "weights", "chosen")}))


def test_a_facenet_library_moves_to_the_default_model_keeping_every_face_and_name(sample_library):
    assert run("--library", sample_library.root, "scan", SAMPLE_DATA, "--model", "facenet", "-q").exit_code == 0
    as_made_before_models_had_names(sample_library)
    before = faces_by_id(sample_library)
    assert {model_of_tag(f["model"]).name for f in before.values()} == {"facenet"}
    assert run("--library", sample_library.root, "cluster").exit_code == 0
    named = next(iter(before))
    assert run("--library", sample_library.root, "label", "face", named, "Alice").exit_code == 0
    cluster = max(c for c in sample_library.read_clusters()["cluster_id"].to_pylist())
    assert run("--library", sample_library.root, "label", "cluster", str(cluster), "Bob").exit_code == 0

    result = run("--library", sample_library.root, "scan", SAMPLE_DATA)
    assert result.exit_code == 0, result.output
    assert f"embedded again by the {DEFAULT_MODEL} model (were facenet; `--model facenet` keeps it)" in result.output
    assert f"0 scanned, 0 moved, 11 unchanged, 0 gone; 0 new faces, {len(before)} embedded again" in result.output
    after = faces_by_id(sample_library)
    assert after.keys() == before.keys()
    assert {model_of_tag(f["model"]).name for f in after.values()} == {DEFAULT_MODEL}
    assert {len(f["embedding"]) for f in after.values()} == {model_named(DEFAULT_MODEL).dim}
    assert all(after[f]["box"] == before[f]["box"] for f in before)
    assert sample_library.model().embedding == DEFAULT_MODEL and not sample_library.model().chosen

    assert run("--library", sample_library.root, "cluster").exit_code == 0
    tags = run("--library", sample_library.root, "export", "-", "--format", "jsonl")
    assert tags.exit_code == 0, tags.output
    given = {face["face_id"]: face for line in tags.output.splitlines() if line.startswith("{")
             for face in json.loads(line)["faces"]}
    assert given[named]["person"] == "Alice" and given[named]["status"] == "confirmed"
    assert any(f["person"] == "Bob" and f["status"] == "confirmed" for f in given.values())


def test_a_model_the_user_chose_stays_until_they_choose_another(sample_library):
    assert run("--library", sample_library.root, "scan", SAMPLE_DATA, "--model", "facenet", "-q").exit_code == 0
    again = run("--library", sample_library.root, "scan", SAMPLE_DATA)
    assert again.exit_code == 0 and "embedded again" not in again.output
    assert sample_library.model().embedding == "facenet" and sample_library.model().chosen


def test_plan_takes_every_face_of_each_photo_with_another_model():
    model = "w@1/p/onnx-int8"
    faces = pa.table({
        "face_id": ["a", "b", "c", "d"],
        "photo_id": ["p1", "p1", "p2", "p3"],
        "path": ["/x/1.jpg", "/x/1.jpg", "/x/2.jpg", "/x/3.jpg"],
        "box": [[0.0, 0, 10, 10], [20.0, 0, 30, 10], [1.0, 1, 9, 9], [2.0, 2, 8, 8]],
        "model": ["w@1/p", model, model, "w@1/p/onnx-fp32"],  # a tag without variant is torch-fp32
    })
    faces = faces.append_column("landmarks", pa.array([[0.0] * 10] * 4)).append_column("rotation", pa.array([None, 90, 0, None], pa.int16()))
    faces = faces.append_column("video_time", pa.array([None, None, None, 4.0], pa.float32()))
    photos = plan_reembed(faces, model)
    assert [(p.photo_id, p.face_ids, p.path) for p in photos] == [("p1", ("a", "b"), "/x/1.jpg"),
                                                                  ("p3", ("d",), "/x/3.jpg")]
    assert photos[0].boxes == ((0.0, 0, 10, 10), (20.0, 0, 30, 10)) and photos[0].rotations == (0, 90)
    assert photos[0].times == (None, None) and photos[1].times == (4.0,)  # a video's face: its frame
    assert plan_reembed(faces.slice(2, 1), model) == []


def config(**given) -> ScanConfig:
    return ScanConfig(roots=("photos",), library=Path("lib"), **given)


@pytest.mark.parametrize(("given", "recorded", "expected"), [
    ({}, None, (DEFAULT_MODEL, "casia-webface", False)),  # a new library: the default
    ({"model": "facenet"}, None, ("facenet", "casia-webface", True)),
    ({"weights": "vggface2"}, None, ("facenet", "vggface2", True)),  # other FaceNet weights: FaceNet
    ({}, LibraryModel("t", "facenet", "casia-webface"), (DEFAULT_MODEL, "casia-webface", False)),  # moves with the default
    ({}, LibraryModel("t", "facenet", "casia-webface", chosen=True), ("facenet", "casia-webface", True)),  # stays
    ({}, LibraryModel("t", "facenet", "vggface2"), ("facenet", "vggface2", True)),  # its weights were the user's
    ({"model": "sface"}, LibraryModel("t", "facenet", "vggface2"), ("sface", "casia-webface", True)),  # no FaceNet
    ({"weights": "my.pt"}, None, ("facenet", os.path.abspath("my.pt"), True)),  # a file, wherever the next scan runs
])
def test_which_model_a_scan_embeds_with(given, recorded, expected):
    chosen = driver.choose_model(config(**given), recorded)
    assert (chosen.embedding, chosen.weights, chosen.chosen) == expected


def test_weights_for_a_model_without_facenet_are_refused_in_one_line():
    with pytest.raises(UsageError, match="--weights vggface2 are FaceNet's and the sface model does not run FaceNet: "
                                         "add --model facenet, or drop --weights"):
        driver.choose_model(config(model="sface", weights="vggface2"), None)
    assert model_for(None, None) == DEFAULT_MODEL and model_for(None, "vggface2") == "facenet"
    assert model_for("facenet+sface", "vggface2") == "facenet+sface"
