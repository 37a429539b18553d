"""`facebatch verify` and `facebatch eval pairs` on real photos from sample_data/ (models load once).

Distances of the sample faces (casia-webface): the same person 0.64 to 0.89, different people
1.23 to 1.40; so every verdict here has a wide margin on both sides of the threshold.
"""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from facebatch.models.detection import Face
from facebatch.errors import FacebatchError, InputError
from facebatch.people import verification
from facebatch.models.catalog import MODELS
from facebatch.people.verification import central_face, embed_central_faces, prominent_face, read_pairs

from conftest import SAMPLE_DATA, run

PEOPLE = SAMPLE_DATA / "people"


def face(x1, y1, x2, y2) -> Face:
    return Face(box=(x1, y1, x2, y2), score=0.99, landmarks=(0.0,) * 10)


def test_face_choice():
    faces = [face(0, 0, 10, 10), face(40, 40, 60, 60), face(70, 0, 100, 40)]
    assert prominent_face(faces) == 2  # 30 x 40 is the largest box
    assert central_face(faces, 100, 100) == 1  # centre (50, 50)
    assert central_face(faces, 20, 20) == 0


@pytest.mark.parametrize("model", sorted(MODELS))
def test_verify_same_person_with_each_model(model):
    result = run("verify", PEOPLE / "barack_obama/2.jpg", PEOPLE / "barack_obama/3.jpg", "--model", model)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("same person: distance 0.")
    assert f"<= threshold {MODELS[model].scale.verify_threshold:.4f}; as a suggestion in a library this distance " \
        "has confidence " in result.output


@pytest.mark.parametrize("model", sorted(MODELS))
def test_verify_different_people_json_with_each_model(model):
    result = run("verify", PEOPLE / "barack_obama/2.jpg", PEOPLE / "joe_biden/1.jpg", "--json", "--model", model)
    assert result.exit_code == 1, result.output
    out = json.loads(result.output)
    assert out["same"] is False and out["confidence"] < 0.01 and out["model"].startswith(f"{model}[") == (model != "facenet")
    assert out["distance"] > out["threshold"] == MODELS[model].scale.verify_threshold
    assert out["a"]["path"].endswith("barack_obama/2.jpg") and out["a"]["face"] == 0 and out["a"]["faces"] == 1
    assert len(out["b"]["box"]) == 4


def test_verify_on_a_group_photo_says_which_face_it_compared():
    group = SAMPLE_DATA / "groups/situation_room_2011.jpg"
    result = run("verify", group, PEOPLE / "barack_obama/1.jpg")
    assert result.exit_code == 1  # the largest face is not Obama's
    # Boxes in whole pixels; another CPU's float rounding may move one by a pixel.
    box = r"\(box \d+,\d+ to \d+,\d+\)"
    assert re.fullmatch(f"photo A {re.escape(str(group))}: face 6 of 13 {box}, the largest; --face N compares another",
                        result.output.splitlines()[1])
    result = run("verify", group, PEOPLE / "barack_obama/1.jpg", "--face", "9", "--face", "0")
    assert result.exit_code == 0, result.output  # his face at the table
    assert len(result.output.splitlines()) == 2  # the portrait has one face: no note for it
    assert re.fullmatch(f"photo A {re.escape(str(group))}: face 9 of 13 {box}, as given", result.output.splitlines()[1])


def test_verify_threshold_option_changes_the_verdict():
    result = run("verify", PEOPLE / "barack_obama/2.jpg", PEOPLE / "joe_biden/1.jpg", "--threshold", "1.9")
    assert result.exit_code == 0
    assert result.output.startswith("same person: distance 1.")


def test_verify_photo_without_a_face_is_exit_2_and_one_line():
    coffee = SAMPLE_DATA / "no_faces/coffee.png"
    result = run("verify", coffee, PEOPLE / "joe_biden/1.jpg")
    assert result.exit_code == 2
    assert result.output == f"Error: no face found in {coffee}\n"


def test_verify_errors_are_exit_2(tmp_path):
    result = run("verify", tmp_path / "nope.jpg", PEOPLE / "joe_biden/1.jpg")
    assert (result.exit_code, result.output) == (2, f"Error: file not found: {tmp_path / 'nope.jpg'}\n")
    result = run("verify", PEOPLE / "joe_biden/2.jpg", PEOPLE / "joe_biden/2.jpg", "--face", "0", "--face", "3")
    assert result.exit_code == 2
    assert result.output == f"Error: --face 3: {PEOPLE / 'joe_biden/2.jpg'} has 1 face (0 to 0)\n"


# fold a: all four pairs clean; fold b: four clean pairs and one with a photo without a face.
PAIRS = """path1,path2,same,fold
people/barack_obama/1.jpg,people/barack_obama/2.jpg,1,a
people/barack_obama/2.jpg,people/joe_biden/1.jpg,0,a
people/joe_biden/1.jpg,people/joe_biden/2.jpg,1,a
people/grace_hopper/1.jpg,people/eileen_collins/1.png,0,a
people/barack_obama/3.jpg,people/barack_obama/4.jpg,1,b
people/barack_obama/4.jpg,people/joe_biden/1.jpg,0,b
people/barack_obama/1.jpg,people/barack_obama/3.jpg,1,b
people/grace_hopper/1.jpg,people/joe_biden/2.jpg,0,b
no_faces/coffee.png,people/barack_obama/1.jpg,1,b
"""


@pytest.fixture(scope="module")
def small_samples(tmp_path_factory):
    """The sample photos at 400 px (detection on 1500 px photos would take most of a minute)."""
    root = tmp_path_factory.mktemp("small")
    for photo in SAMPLE_DATA.rglob("*"):
        if photo.suffix in (".jpg", ".png"):
            copy = root / photo.relative_to(SAMPLE_DATA)
            copy.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(photo) as image:
                image.thumbnail((400, 400))
                image.save(copy)
    return root


def test_eval_pairs_on_sample_photos(tmp_path, small_samples, monkeypatch):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(PAIRS)
    embedded = []

    def recording(*args, **kwargs):
        embedded.append(embed_central_faces(*args, **kwargs))
        return embedded[-1]

    monkeypatch.setattr(verification, "embed_central_faces", recording)
    result = run("eval", "pairs", pairs, "--root", small_samples, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    # Every pair with two faces is answered right whichever fold picks the threshold; the pair
    # with coffee.png counts as wrong: fold a 4/4, fold b 4/5.
    assert (out["pairs"], out["same_pairs"], out["photos"], out["failed_pairs"]) == (9, 5, 9, 1)
    assert out["failed_photos"] == {"no_faces/coffee.png": "no face found"}
    assert out["fold_accuracies"] == pytest.approx([1.0, 0.8])
    assert (out["accuracy"], out["accuracy_std"]) == pytest.approx((0.9, 0.1))
    assert out["best_accuracy"] == pytest.approx(8 / 9)
    assert 0.89 < out["best_threshold"] < 1.23
    assert out["auc"] == 1.0
    # 4 different pairs: FAR 1e-3 allows none, the threshold sits just below the nearest one
    assert (out["tar"], out["far"]) == (1.0, 0.0)
    assert 1.1 < out["tar_threshold"] < 1.4

    # the text output of the same run (the models are not run twice: the embeddings are replayed)
    monkeypatch.setattr(verification, "embed_central_faces", lambda *args, **kwargs: embedded[0])
    text = run("eval", "pairs", pairs, "--root", small_samples)
    assert text.exit_code == 0
    lines = text.output.splitlines()
    assert lines[0] == "pairs         9 (5 same, 4 different), 9 photos, 2 folds"
    assert lines[1] == "accuracy      0.9000 ± 0.1000 (each fold's threshold chosen on the other 1)"
    assert lines[3] == "ROC AUC       1.0000"
    assert lines[-2:] == [
        "failed        1 pairs counted as wrong: 1 photos without an embedding",
        "  no_faces/coffee.png: no face found",
    ]


def test_read_pairs(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.jpg").write_bytes(b"x")
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("a.jpg,b.jpg,yes\na.jpg, a.jpg ,1\n\nb.jpg,a.jpg,false\n")
    pairs = read_pairs(csv_file, tmp_path)  # no header: the first row's label is a label
    assert [(p.path1, p.path2, p.same, p.fold) for p in pairs] == [
        ("a.jpg", "b.jpg", True, None),
        ("a.jpg", "a.jpg", True, None),
        ("b.jpg", "a.jpg", False, None),
    ]


def test_read_pairs_by_header_names(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.jpg").write_bytes(b"x")
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("fold,path1,path2,same\n1,a.jpg,b.jpg,0\n2,a.jpg,a.jpg,1\n")
    pairs = read_pairs(csv_file, tmp_path)
    assert [(p.path1, p.path2, p.same, p.fold) for p in pairs] == [("a.jpg", "b.jpg", False, "1"),
                                                                    ("a.jpg", "a.jpg", True, "2")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a.jpg,b.jpg,maybe\n", "line 1: same must be 1/0, true/false or yes/no, got 'maybe'"),
        ("path1,path2,same\na.jpg,b.jpg,same\n", "line 2: same must be 1/0, true/false or yes/no, got 'same'"),
        ("path1,path2,same\na.jpg\n", "line 2: expected path1,path2,same[,fold]"),
        ("path1,path2,same\n", "has no pairs"),
        ("a.jpg,b.jpg,1,x\na.jpg,b.jpg,0\n", "give a fold for every pair or for none"),
        ("a.jpg,c.jpg,1\n", "photo not found: "),
    ],
)
def test_bad_pairs_files(tmp_path, content, message):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.jpg").write_bytes(b"x")
    csv_file = tmp_path / "p.csv"
    csv_file.write_text(content)
    with pytest.raises(FacebatchError, match=re.escape(message)) as info:
        read_pairs(csv_file, tmp_path)
    assert isinstance(info.value, InputError)


def test_eval_pairs_errors_are_one_line(tmp_path):
    result = run("eval", "pairs", tmp_path / "none.csv")
    assert result.exit_code == 2
    assert result.output.startswith("Error: cannot read pairs file ") and result.output.count("\n") == 1
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("people/barack_obama/1.jpg,people/barack_obama/2.jpg,1\n")
    result = run("eval", "pairs", pairs, "--root", tmp_path)
    assert result.exit_code == 2
    assert result.output == (
        f"Error: photo not found: {tmp_path / 'people/barack_obama/1.jpg'} (paths in pairs.csv are relative to --root)\n"
    )


def test_a_bad_device_is_exit_2_before_any_model_loads():
    result = run("verify", "a.jpg", "b.jpg", "--device", "tpu")
    assert (result.exit_code, result.output) == (2, "Error: --device must be cpu, cuda or cuda:N, got 'tpu'\n")
