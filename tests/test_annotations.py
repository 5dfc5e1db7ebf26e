"""Annotation readers: hand-made files with hand-worked values, every malformed-input error,
and integration checks on ../shared/data (skipped when it is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA  # noqa: E402
from mtcnnkit.data.annotations import (
    EMPTY_BOX,
    OUTSIDE_IMAGE,
    Ellipse,
    FaceBoxes,
    FddbImage,
    read_custom_json,
    read_fddb_ellipses,
    read_fddb_folds,
    read_landmark_list,
    read_wider_mat,
    read_wider_txt,
)

WIDER_SPLIT = SHARED_DATA / "WIDER_FACE" / "wider_face_split"


def write(tmp_path: Path, name: str, text: str, newline: str = "\n") -> Path:
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def shared(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data file {path} is missing (integration test needs ../shared/data)")
    return path


def raises_at(where: str, match: str):
    """pytest.raises for a ValueError whose message names ``file:line`` and the problem."""
    return pytest.raises(ValueError, match=rf"{where}: .*{match}")


# ---------------------------------------------------------------------------------------------
# WIDER txt

WIDER_TXT = """\
0--Parade/0_Parade_1.jpg
3
10 20 30 40 2 1 0 0 1 0
5 6 0 10 0 0 0 1 0 0
7 8 9 -1 1 1 1 0 0 1
1--Handshaking/1_Hand_2.jpg
0
0 0 0 0 0 0 0 0 0 0
1--Handshaking/1_Hand_3.jpg
1
100 50 20 10 0 0 0 0 2 2
"""


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_wider_txt_converts_drops_and_skips_the_count0_dummy(tmp_path, newline):
    faces, stats = read_wider_txt(write(tmp_path, "gt.txt", WIDER_TXT, newline))
    assert [f.image for f in faces] == [
        "0--Parade/0_Parade_1.jpg",
        "1--Handshaking/1_Hand_2.jpg",
        "1--Handshaking/1_Hand_3.jpg",
    ]
    first, empty, third = faces
    assert first.boxes.dtype == np.float32 and first.attributes.dtype == np.int16
    np.testing.assert_array_equal(first.boxes, [[10, 20, 40, 60]])  # w=0 and h=-1 rows dropped
    np.testing.assert_array_equal(first.attributes, [[2, 1, 0, 0, 1, 0]])
    assert empty.boxes.shape == (0, 4) and empty.attributes.shape == (0, 6)
    np.testing.assert_array_equal(third.boxes, [[100, 50, 120, 60]])
    np.testing.assert_array_equal(third.attributes, [[0, 0, 0, 0, 2, 2]])
    assert (stats.images, stats.boxes, stats.dropped, stats.clipped) == (3, 2, 2, 0)
    assert stats.reasons == {EMPTY_BOX: 2}


def test_wider_txt_count0_without_dummy_line_and_at_end_of_file(tmp_path):
    text = "a/1.jpg\n0\nb/2.jpg\n1\n1 2 3 4 0 0 0 0 0 0\nc/3.jpg\n0\n"
    faces, stats = read_wider_txt(write(tmp_path, "gt.txt", text))
    assert [f.image for f in faces] == ["a/1.jpg", "b/2.jpg", "c/3.jpg"]
    assert [len(f.boxes) for f in faces] == [0, 1, 0]
    np.testing.assert_array_equal(faces[1].boxes, [[1, 2, 4, 6]])
    assert (stats.images, stats.boxes, stats.dropped) == (3, 1, 0)


def test_wider_txt_faceless_image_written_as_one_zero_box(tmp_path):
    # How our val copy writes faceless images: count 1 and an all-zero line.
    faces, stats = read_wider_txt(write(tmp_path, "gt.txt", "a/1.jpg\n1\n" + "0 " * 10 + "\n"))
    assert faces[0].boxes.shape == (0, 4)
    assert (stats.boxes, stats.dropped, stats.reasons) == (0, 1, {EMPTY_BOX: 1})


def test_wider_txt_clips_and_drops_with_image_sizes(tmp_path):
    # Image 100 x 80. Last column (pose) numbers the boxes so we can see which were kept.
    text = """\
ev/img.jpg
7
10 10 20 20 0 0 0 0 0 1
-5 70 20 20 0 0 0 0 0 2
90 -10 30 20 0 0 0 0 0 3
100 10 5 5 0 0 0 0 0 4
-20 10 20 10 0 0 0 0 0 5
10 80 5 5 0 0 0 0 0 6
10 -30 5 30 0 0 0 0 0 7
"""
    faces, stats = read_wider_txt(write(tmp_path, "gt.txt", text), {"ev/img.jpg": (100, 80)})
    np.testing.assert_array_equal(
        faces[0].boxes,
        [[10, 10, 30, 30], [0, 70, 15, 80], [90, 0, 100, 10]],  # [-5,70,15,90], [90,-10,120,10]
    )
    np.testing.assert_array_equal(faces[0].attributes[:, 5], [1, 2, 3])
    # x1 >= width, x2 <= 0, y1 >= height, y2 <= 0: entirely outside
    assert (stats.boxes, stats.dropped, stats.clipped) == (3, 4, 2)
    assert stats.reasons == {OUTSIDE_IMAGE: 4}


def test_wider_txt_empty_box_is_counted_before_outside(tmp_path):
    # The val file's `1026 474 0 23` in a 1024-wide image: w=0 and outside; counted as w=0.
    path = write(tmp_path, "gt.txt", "ev/i.jpg\n1\n1026 474 0 23 2 0 0 0 2 0\n")
    _, stats = read_wider_txt(path, {"ev/i.jpg": (1024, 577)})
    assert stats.reasons == {EMPTY_BOX: 1}


def test_wider_txt_image_sizes_must_cover_every_image(tmp_path):
    path = write(tmp_path, "gt.txt", "ev/i.jpg\n1\n1 1 2 2 0 0 0 0 0 0\n")
    with pytest.raises(ValueError, match=r"gt\.txt: image_sizes has no entry for 'ev/i\.jpg'"):
        read_wider_txt(path, {"ev/other.jpg": (10, 10)})


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n1 2 3 4 0 0 0 0 0\n", 4, "expected 10 numbers per box"),
        ("a.jpg\n1\n1 2 3 4 0 0 0 0 0 0 0\n", 3, "expected 10 numbers per box line.*got 11"),
        ("a.jpg\n1\n1 2 x 4 0 0 0 0 0 0\n", 3, "'x' is not a number"),
        ("a.jpg\n1\n1 2 3 nan 0 0 0 0 0 0\n", 3, "'nan' is not a number"),
        ("a.jpg\n1\n1 2 3 4 0 0 0 0.5 0 0\n", 3, "attributes must be whole numbers"),
        ("a.jpg\nthree\n", 2, "expected the face count of 'a.jpg', got 'three'"),
        ("a.jpg\n-1\n", 2, "negative face count -1"),
        ("a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\nb.jpg\n", 4, "file ends after 'b.jpg'"),
        (
            "a.jpg\n3\n1 2 3 4 0 0 0 0 0 0\n1 2 3 4 0 0 0 0 0 0\n",
            4,
            "count says 3 faces .* after 2",
        ),
        ("a.jpg\n2\n", 2, "count says 2 faces .* after 0"),
        # A count too large eats the next name line, which then is not a box line.
        ("a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\nb.jpg\n0\n", 4, "expected 10 numbers .* got 1"),
    ],
)
def test_wider_txt_malformed(tmp_path, text, line, problem):
    with raises_at(rf"wider_bad\.txt:{line}", problem):
        read_wider_txt(write(tmp_path, "wider_bad.txt", text))


# ---------------------------------------------------------------------------------------------
# WIDER mat


def _cell(items: list) -> np.ndarray:
    cell = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        cell[i, 0] = item
    return cell


def _wider_mat_dict() -> dict[str, np.ndarray]:
    labels = [np.array([[1], [2], [3]], np.uint8), np.array([[0]], np.uint8)]
    mat = {
        "event_list": _cell(["0--Parade", "1--Handshaking"]),
        "file_list": _cell([_cell(["0_a", "0_b"]), _cell(["1_c"])]),
        "face_bbx_list": _cell(
            [
                _cell(
                    [
                        np.array([[10, 20, 30, 40], [1026, 474, -2, 23], [5, 5, 1, 1]], np.int32),
                        np.array([[0, 0, 0, 0]], np.int32),  # how the .mat stores no faces
                    ]
                ),
                _cell([np.array([[7, 8, 2, 3]], np.int32)]),
            ]
        ),
    }
    for k, name in enumerate(["blur", "expression", "illumination", "invalid", "occlusion"]):
        mat[f"{name}_label_list"] = _cell([_cell([x + k for x in labels]), _cell([labels[1]])])
    mat["pose_label_list"] = _cell([_cell(labels), _cell([np.array([[1]], np.uint8)])])
    return mat


def test_wider_mat_small_file(tmp_path):
    sio = pytest.importorskip("scipy.io")
    path = tmp_path / "wider_small.mat"
    sio.savemat(path, _wider_mat_dict())
    faces, stats = read_wider_mat(path)
    assert [f.image for f in faces] == [
        "0--Parade/0_a.jpg",
        "0--Parade/0_b.jpg",
        "1--Handshaking/1_c.jpg",
    ]
    np.testing.assert_array_equal(faces[0].boxes, [[10, 20, 40, 60], [5, 5, 6, 6]])
    np.testing.assert_array_equal(faces[0].attributes, [[1, 2, 3, 4, 5, 1], [3, 4, 5, 6, 7, 3]])
    assert faces[1].boxes.shape == (0, 4) and faces[1].attributes.shape == (0, 6)
    np.testing.assert_array_equal(faces[2].boxes, [[7, 8, 9, 11]])
    np.testing.assert_array_equal(faces[2].attributes, [[0, 0, 0, 0, 0, 1]])
    assert (stats.images, stats.boxes, stats.dropped) == (3, 3, 2)
    assert stats.reasons == {EMPTY_BOX: 2}


def test_wider_mat_malformed(tmp_path):
    sio = pytest.importorskip("scipy.io")
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(b"not a mat file" * 20)
    with pytest.raises(ValueError, match=r"garbage\.mat: not a readable MATLAB"):
        read_wider_mat(garbage)

    mat = _wider_mat_dict()
    del mat["pose_label_list"]
    sio.savemat(tmp_path / "no_pose.mat", mat)
    with pytest.raises(ValueError, match=r"no_pose\.mat: .*missing pose_label_list"):
        read_wider_mat(tmp_path / "no_pose.mat")

    mat = _wider_mat_dict()
    mat["blur_label_list"][1, 0] = _cell([np.array([[1], [1]], np.uint8)])
    sio.savemat(tmp_path / "short.mat", mat)
    with pytest.raises(ValueError, match=r"short\.mat: 1--Handshaking/1_c\.jpg: 1 boxes but 2"):
        read_wider_mat(tmp_path / "short.mat")

    mat = _wider_mat_dict()
    mat["file_list"][0, 0] = _cell(["0_a"])
    sio.savemat(tmp_path / "files.mat", mat)
    with pytest.raises(ValueError, match=r"files\.mat: 0--Parade: 1 files but 2 face_bbx_list"):
        read_wider_mat(tmp_path / "files.mat")


# ---------------------------------------------------------------------------------------------
# Landmark lists


def test_landmark_list_crlf_backslash_and_box_order(tmp_path):
    text = (
        "net_7876\\0_0_0.jpg 104 308 95 299 151.000000 147.000000 246.000000 148.000000 "
        "209.000000 194.000000 161.000000 237.000000 235.000000 235.000000\r\n"
        "\r\n"
        "  lfw_5590/Aaron.jpg\t10  50 20 60 20 30 40 30 30.5 40 22 50 38 50   \r\n"
    )
    samples = read_landmark_list(write(tmp_path, "trainImageList.txt", text))
    assert [s.image for s in samples] == ["net_7876/0_0_0.jpg", "lfw_5590/Aaron.jpg"]
    # file: left right top bottom -> x1 y1 x2 y2
    assert samples[0].box == (104.0, 95.0, 308.0, 299.0)
    assert samples[1].box == (10.0, 20.0, 50.0, 60.0)
    assert samples[0].points.dtype == np.float32 and samples[0].points.shape == (5, 2)
    np.testing.assert_array_equal(
        samples[0].points, [[151, 147], [246, 148], [209, 194], [161, 237], [235, 235]]
    )
    np.testing.assert_array_equal(
        samples[1].points, [[20, 30], [40, 30], [30.5, 40], [22, 50], [38, 50]]
    )


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (
            "a.jpg 1 2 3 4 1 1 2 2 3 3 4 4 5 5\nb.jpg 1 2 3 4 1 1 2 2 3 3 4 4 5\n",
            2,
            "15 fields.*got 14",
        ),
        ("\n\na.jpg 1 2 3 4 1 1 2 2 3 3 4 4 5 5 6\n", 3, "expected 15 fields.*got 16"),
        ("a.jpg 1 2 3 4 1 1 2 2 3 3 4 4 5 five\n", 1, "'five' is not a number"),
    ],
)
def test_landmark_list_malformed(tmp_path, text, line, problem):
    with raises_at(rf"marks\.txt:{line}", problem):
        read_landmark_list(write(tmp_path, "marks.txt", text))


# ---------------------------------------------------------------------------------------------
# FDDB

FDDB_FOLD_1 = """\
2002/08/11/big/img_591
1
123.583300 85.549500 1.265839 269.693400 161.781200  1
2002/08/26/big/img_265
2
67.363819 44.511485 -1.476417 105.249970 87.209036
41.936870   27.064477 1.471906 184.070915 129.345601    1
2003/01/01/big/img_1
0
"""


def test_fddb_ellipses_with_optional_trailing_one_and_zero_faces(tmp_path):
    images = read_fddb_ellipses(write(tmp_path, "ell.txt", FDDB_FOLD_1, "\r\n"))
    assert images == [
        FddbImage(
            "2002/08/11/big/img_591", (Ellipse(123.5833, 85.5495, 1.265839, 269.6934, 161.7812),)
        ),
        FddbImage(
            "2002/08/26/big/img_265",
            (
                Ellipse(67.363819, 44.511485, -1.476417, 105.24997, 87.209036),
                Ellipse(41.93687, 27.064477, 1.471906, 184.070915, 129.345601),
            ),
        ),
        FddbImage("2003/01/01/big/img_1", ()),
    ]


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("img\n1\n1 2 3 4\n", 3, "expected 5 or 6 numbers per ellipse line.*got 4"),
        ("img\n1\n1 2 3 4 5 1 1\n", 3, "got 7"),
        ("img\n1\n1 2 3 4 x 1\n", 3, "'x' is not a number"),
        ("img\n1\n1 2 3 4 5 1\nimg2\n", 4, "file ends after 'img2'"),
        ("img\n2\n1 2 3 4 5 1\n", 3, "count says 2 faces .* after 1"),
        ("img\n1.5\n", 2, "expected the face count of 'img', got '1.5'"),
    ],
)
def test_fddb_ellipses_malformed(tmp_path, text, line, problem):
    with raises_at(rf"FDDB-fold-07-ellipseList\.txt:{line}", problem):
        read_fddb_ellipses(write(tmp_path, "FDDB-fold-07-ellipseList.txt", text))


def _fddb_folds(tmp_path: Path, list_1: str) -> Path:
    write(tmp_path, "FDDB-fold-01-ellipseList.txt", FDDB_FOLD_1)
    write(tmp_path, "FDDB-fold-01.txt", list_1)
    write(tmp_path, "FDDB-fold-02-ellipseList.txt", "2002/09/09/big/img_9\n1\n5 4 0 10 20 1\n")
    write(tmp_path, "FDDB-fold-02.txt", "2002/09/09/big/img_9\n")
    return tmp_path


def test_fddb_folds_in_fold_order(tmp_path):
    listed = "2002/08/11/big/img_591\n2002/08/26/big/img_265\n2003/01/01/big/img_1\n"
    folds_dir = _fddb_folds(tmp_path, listed)
    images = read_fddb_folds(folds_dir, folds=[2, 1])
    assert [im.image for im in images] == [
        "2002/09/09/big/img_9",
        "2002/08/11/big/img_591",
        "2002/08/26/big/img_265",
        "2003/01/01/big/img_1",
    ]
    assert images[0].faces == (Ellipse(5, 4, 0, 10, 20),)
    assert [im.image for im in read_fddb_folds(folds_dir, folds=[2])] == ["2002/09/09/big/img_9"]


def test_fddb_folds_image_list_must_match(tmp_path):
    swapped = "2002/08/26/big/img_265\n2002/08/11/big/img_591\n2003/01/01/big/img_1\n"
    with raises_at(r"FDDB-fold-01\.txt:1", "lists '2002/08/26/big/img_265' but"):
        read_fddb_folds(_fddb_folds(tmp_path, swapped), folds=[1, 2])


def test_fddb_folds_image_list_must_have_the_same_length(tmp_path):
    short = "2002/08/11/big/img_591\n2002/08/26/big/img_265\n"
    with pytest.raises(ValueError, match=r"FDDB-fold-01\.txt: lists 2 images but .* has 3"):
        read_fddb_folds(_fddb_folds(tmp_path, short), folds=[1])


# ---------------------------------------------------------------------------------------------
# Custom JSON

POINTS = [[40, 70], [72, 69], [57, 90], [44, 108], [70, 107.5]]


def test_custom_json_with_and_without_landmarks(tmp_path):
    document = {
        "images": [
            {
                "path": "party\\001.jpg",
                "faces": [
                    {"box": [12, 30, 96, 130], "landmarks": POINTS},
                    {"box": [150.5, 40, 210, 118]},
                    {"box": [1, 2, 3, 4], "landmarks": None},
                ],
            },
            {"path": "/data/empty_room.jpg", "faces": []},
            {"path": "no_faces_key.jpg"},
        ]
    }
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(document))
    faces, landmarks = read_custom_json(path)
    assert [f.image for f in faces] == ["party/001.jpg", "/data/empty_room.jpg", "no_faces_key.jpg"]
    assert all(isinstance(f, FaceBoxes) and f.attributes is None for f in faces)
    assert faces[0].boxes.dtype == np.float32
    np.testing.assert_array_equal(
        faces[0].boxes, [[12, 30, 96, 130], [150.5, 40, 210, 118], [1, 2, 3, 4]]
    )
    assert faces[1].boxes.shape == (0, 4) and faces[2].boxes.shape == (0, 4)
    assert len(landmarks) == 1
    assert landmarks[0].image == "party/001.jpg"
    assert landmarks[0].box == (12.0, 30.0, 96.0, 130.0)
    assert landmarks[0].points.dtype == np.float32
    np.testing.assert_array_equal(landmarks[0].points, POINTS)


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], 'expected an object with an "images" list'),
        ({"images": {}}, "images: expected a list, got dict"),
        ({"images": [{"faces": []}]}, 'images\\[0\\]: expected an object with a "path"'),
        ({"images": [{"path": "a.jpg", "faces": {}}]}, "images\\[0\\].faces: expected a list"),
        (
            {"images": [{"path": "a.jpg", "faces": [{}]}]},
            'faces\\[0\\]: expected an object with a "box"',
        ),
        (
            {"images": [{"path": "a", "faces": [{"box": [1, 2, 3]}]}]},
            "box: expected a list of 4 numbers",
        ),
        (
            {"images": [{"path": "a", "faces": [{"box": [1, 2, 3, "4"]}]}]},
            "box: expected a list of 4",
        ),
        (
            {"images": [{"path": "a", "faces": [{"box": [5, 2, 3, 4]}]}]},
            "box: needs x2 > x1 and y2 > y1",
        ),
        (
            {"images": [{"path": "a", "faces": [{"box": [1, 2, 3, 4], "landmarks": POINTS[:4]}]}]},
            "faces\\[0\\].landmarks: expected 5 points, got 4",
        ),
        (
            {
                "images": [
                    {"path": "a", "faces": [{"box": [1, 2, 3, 4], "landmarks": [*POINTS[:4], [1]]}]}
                ]
            },
            "landmarks\\[4\\]: expected a list of 2 numbers",
        ),
    ],
)
def test_custom_json_malformed(tmp_path, document, problem):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=rf"mine\.json: .*{problem}"):
        read_custom_json(path)


def test_custom_json_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "mine.json", '{"images": [\n  {"path": "a.jpg",}\n]}\n')
    with raises_at(r"mine\.json:2", "invalid JSON"):
        read_custom_json(path)


# ---------------------------------------------------------------------------------------------
# Integration on ../shared/data


def test_shared_wider_val_txt():
    faces, stats = read_wider_txt(
        shared("WIDER_FACE", "wider_face_split", "wider_face_val_bbx_gt.txt")
    )
    # The file holds 15,209 box lines. Seven have w<=0 or h<=0: the Ice_Skating `1026 474 0 23`,
    # three more zero-size boxes (0_Parade_Parade_0_317 `706 94 0 1`, 7_Cheering_Cheering_7_171
    # `0 0 16 0` and `760 207 0 1`), and three faceless images written as count 1 followed by
    # an all-zero line (not count 0 + dummy). So 15,202 are kept, not 15,208.
    assert (stats.images, stats.boxes, stats.dropped) == (1162, 15202, 7)
    assert stats.boxes + stats.dropped == 15209
    assert stats.reasons == {EMPTY_BOX: 7}
    assert len(faces) == 1162 and len({f.image for f in faces}) == 1162
    by_image = {f.image: f for f in faces}
    ice = by_image["39--Ice_Skating/39_Ice_Skating_iceskiing_39_583.jpg"].boxes
    assert len(ice) == 31 and not (ice[:, 0] == 1026).any()
    assert sorted(f.image for f in faces if len(f.boxes) == 0) == [
        "37--Soccer/37_Soccer_soccer_ball_37_281.jpg",
        "50--Celebration_Or_Party/50_Celebration_Or_Party_houseparty_50_715.jpg",
        "7--Cheering/7_Cheering_Cheering_7_426.jpg",
    ]
    for f in faces:
        assert (f.boxes[:, 2] > f.boxes[:, 0]).all() and (f.boxes[:, 3] > f.boxes[:, 1]).all()


def test_shared_wider_train_txt():
    faces, stats = read_wider_txt(
        shared("WIDER_FACE", "wider_face_split", "wider_face_train_bbx_gt.txt")
    )
    assert (len(faces), stats.images, stats.boxes, stats.dropped) == (361, 361, 1241, 0)


@pytest.mark.parametrize(("split", "images_in_mat"), [("val", 3226), ("train", 12880)])
def test_shared_wider_txt_matches_mat(split, images_in_mat):
    pytest.importorskip("scipy.io")
    txt, _ = read_wider_txt(
        shared("WIDER_FACE", "wider_face_split", f"wider_face_{split}_bbx_gt.txt")
    )
    mat, _ = read_wider_mat(shared("WIDER_FACE", "wider_face_split", f"wider_face_{split}.mat"))
    assert len(mat) == images_in_mat
    by_image = {f.image: f for f in mat}
    for f in txt:
        assert f.image in by_image
        np.testing.assert_array_equal(f.boxes, by_image[f.image].boxes, err_msg=f.image)
        np.testing.assert_array_equal(f.attributes, by_image[f.image].attributes, err_msg=f.image)


@pytest.mark.parametrize(
    ("name", "count"), [("trainImageList.txt", 2000), ("testImageList.txt", 800)]
)
def test_shared_landmark_lists(name, count):
    samples = read_landmark_list(shared("CNN_FacePoint", "train", name))
    assert len(samples) == count
    for s in samples:
        assert s.image.startswith("net_7876/") and "\\" not in s.image
        x1, y1, x2, y2 = s.box
        assert x1 < x2 and y1 < y2
        assert (s.points[:, 0] >= x1).all() and (s.points[:, 0] <= x2).all(), s.image
        assert (s.points[:, 1] >= y1).all() and (s.points[:, 1] <= y2).all(), s.image


def test_shared_fddb_folds():
    images = read_fddb_folds(shared("FDDB", "FDDB-folds"))
    assert len(images) == 2845
    assert sum(len(im.faces) for im in images) == 5171
    assert images[0].image == "2002/08/11/big/img_591"
    assert all(len(im.faces) > 0 for im in images)
