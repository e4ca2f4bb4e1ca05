"""Damaged or hostile MindRecord sets are refused before anything is read: labels outside the class
list, a class list in ``mindrecord.json`` that differs from the one in the shard header, a row table
that is not a permutation of the records, malformed file entries and entries outside the set's
folder. Each is one ``UserError`` naming the file and the command that writes the set again."""
import json
import logging
import os
import shutil

import numpy as np
import pytest

from mindcv_res2net.data import create_dataset
from mindcv_res2net.data.readers import mindrecord_writer as mr_module
from mindcv_res2net.data.decode import BadImageCounter
from mindcv_res2net.data.readers.image_folder import scan_image_folder
from mindcv_res2net.data.readers.mindrecord_writer import META_NAME, ROWS_NAME, RowDecoder, prepare_mindrecord
from mindcv_res2net.errors import UserError
from tests.test_mindrecord import CLASSES, _make_tree

RERUN = "prepare mindrecord"


@pytest.fixture(scope="module")
def good_set(tmp_path_factory):
    """(ImageFolder root, MindRecord root with 2 shards): 3 classes x 3 train images."""
    base = tmp_path_factory.mktemp("mri")
    src = _make_tree(base / "src", per_class=3, splits=("train",))
    prepare_mindrecord(src, str(base / "mr"), shards=2, log=lambda *a: None)
    return src, str(base / "mr")


def _copy(good_set, tmp_path):
    """A private copy of the good set: (root, train folder)."""
    root = str(tmp_path / "set")
    shutil.copytree(good_set[1], root)
    return root, os.path.join(root, "train")


def _edit_meta(folder, edit):
    path = os.path.join(folder, META_NAME)
    with open(path, encoding="utf-8") as fh:
        meta = json.load(fh)
    edit(meta)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(meta, fh)
    return path


def _refused(root, *names):
    """The one UserError of opening ``root``'s train split; it names every string in ``names``."""
    with pytest.raises(UserError) as err:
        create_dataset("mindrecord", root=root, split="train", shuffle=False)
    msg = str(err.value)
    for name in names:
        assert name in msg, msg
    return msg


def _labels(dataset):
    return [int(lab) for _, lab in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)]


def _write_with_label(src, out, monkeypatch, image, label):
    """Write ``src`` as one shard with the stored label of image ``image`` replaced by ``label``."""
    def scan(*args, **kwargs):
        paths, labels, classes = scan_image_folder(*args, **kwargs)
        labels = [int(x) for x in labels]
        labels[image] = label
        return paths, labels, classes

    monkeypatch.setattr(mr_module, "scan_image_folder", scan)
    prepare_mindrecord(src, out, shards=1, log=lambda *a: None)
    monkeypatch.undo()
    return os.path.join(out, "train")


def test_good_set_reads_as_before(good_set):
    src, mr = good_set
    got = create_dataset("mindrecord", root=mr, split="train", shuffle=False)
    ref = create_dataset("imagefolder", root=src, split="train", shuffle=False)
    assert _labels(got) == _labels(ref) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize("label", [-1, len(CLASSES)], ids=["negative", "past_class_list"])
def test_label_outside_the_class_list_is_refused(good_set, tmp_path, monkeypatch, label):
    folder = _write_with_label(good_set[0], str(tmp_path / "bad"), monkeypatch, image=4, label=label)
    msg = _refused(str(tmp_path / "bad"), os.path.join(folder, "data.mindrecord"), RERUN)
    assert f"label {label}" in msg and "dog/01.png" in msg  # the record, by name


def test_reordered_class_list_in_json_is_refused(good_set, tmp_path):
    root, folder = _copy(good_set, tmp_path)
    meta_path = _edit_meta(folder, lambda m: m.update(classes=m["classes"][::-1]))
    msg = _refused(root, meta_path, os.path.join(folder, "data.mindrecord0"), RERUN)
    assert "'cat'" in msg and "'eel'" in msg


def test_swapped_shard_entries_are_refused(good_set, tmp_path):
    root, folder = _copy(good_set, tmp_path)  # sizes still match, but MindDataset's row order changes
    meta_path = _edit_meta(folder, lambda m: m.update(files=m["files"][::-1]))
    _refused(root, meta_path, "data.mindrecord1", RERUN)


def test_duplicated_row_in_row_table_is_refused(good_set, tmp_path):
    root, folder = _copy(good_set, tmp_path)
    rows_path = os.path.join(folder, ROWS_NAME)
    rows = np.load(rows_path)
    rows[1] = rows[0]  # image 1 would read image 0's record; one record never read
    np.save(rows_path, rows)
    _refused(root, rows_path, f"row {rows[0]}", RERUN)


@pytest.mark.parametrize("edit", [
    lambda m: m["files"][0].pop("bytes"),
    lambda m: m["files"][1].pop("index_bytes"),
    lambda m: m["files"][0].update(bytes="many"),
    lambda m: m["files"][0].update(bytes=-5),
    lambda m: m["files"].__setitem__(0, "data.mindrecord0"),
    lambda m: m.update(files={"name": "data.mindrecord0"}),
    lambda m: m.update(files=[]),
    lambda m: m["files"].__setitem__(1, dict(m["files"][0])),
    lambda m: m.update(classes=["cat", "cat", "eel"]),
    lambda m: m.update(classes="cat"),
    lambda m: m.update(unreadable_index={"dog/00.jpg": 999}),
], ids=["no_bytes", "no_index_bytes", "bytes_not_int", "bytes_negative", "entry_not_object", "files_not_list",
        "no_files", "duplicate_entry", "duplicate_class", "classes_not_list", "unreadable_index_out_of_range"])
def test_malformed_description_is_refused(good_set, tmp_path, edit):
    root, folder = _copy(good_set, tmp_path)
    meta_path = _edit_meta(folder, edit)
    _refused(root, meta_path, RERUN)


@pytest.mark.parametrize("name", ["../../other/data.mindrecord0", "ABS", "sub/data.mindrecord0", ".."])
def test_file_entry_outside_the_folder_is_refused(good_set, tmp_path, name):
    root, folder = _copy(good_set, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    sub = os.path.join(folder, "sub")
    os.makedirs(sub)
    for target in (str(other), sub):  # a real copy there: the entry would otherwise read it silently
        for ext in ("", ".db"):
            shutil.copy(os.path.join(folder, "data.mindrecord0" + ext), os.path.join(target, "data.mindrecord0" + ext))
    if name == "ABS":
        name = str(other / "data.mindrecord0")
    meta_path = _edit_meta(folder, lambda m: m["files"][0].update(name=name))
    msg = _refused(root, meta_path, RERUN)
    assert repr(name) in msg and "outside" in msg


def test_index_label_outside_the_class_list_is_refused(good_set, tmp_path):
    import sqlite3
    root, folder = _copy(good_set, tmp_path)
    db = os.path.join(folder, "data.mindrecord1.db")
    size = os.path.getsize(db)
    con = sqlite3.connect(db)
    con.execute("UPDATE INDEXES SET label_0 = 7")
    con.commit()
    con.close()
    assert os.path.getsize(db) == size  # the size check alone does not see it
    _refused(root, db, "label 7", RERUN)


def test_set_without_classes_in_the_header_reads_with_a_note(good_set, tmp_path, monkeypatch, caplog):
    """Sets whose shard header holds no class list: the json is checked against the labels only."""
    monkeypatch.setattr(mr_module, "_schema_description", lambda classes: json.dumps({"format": mr_module.FORMAT}))
    out = str(tmp_path / "old")
    prepare_mindrecord(good_set[0], out, shards=2, log=lambda *a: None)
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING, logger="mindcv_res2net.data"):
        got = create_dataset("mindrecord", root=out, split="train", shuffle=False)
    assert _labels(got) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    notes = [r.getMessage() for r in caplog.records if "no class list" in r.getMessage()]
    assert len(notes) == 1 and "data.mindrecord0" in notes[0]  # one note for the set, not one per shard
    _edit_meta(os.path.join(out, "train"), lambda m: m.update(classes=["cat", "dog"]))
    _refused(out, os.path.join(out, "train", "data.mindrecord"), "label 2", RERUN)


def test_shard_header_matches_mindspore_reader(good_set):
    """The header read directly from a shard is the one MindSpore's FileReader reads."""
    from mindspore.mindrecord import FileReader
    path = os.path.join(good_set[1], "train", "data.mindrecord0")
    header = mr_module.read_shard_header(path)
    reader = FileReader([path], num_consumer=1, columns=["label"])
    try:
        assert header["schema"][0]["schema"] == reader.schema()
    finally:
        reader.close()
    assert json.loads(header["schema"][0]["desc"])["classes"] == list(CLASSES)
    assert [os.path.basename(a) for a in header["shard_addresses"]] == ["data.mindrecord0", "data.mindrecord1"]


def test_row_decoder_refuses_a_label_outside_the_map():
    """A record whose label disagrees with its index file is still refused while reading."""
    counter = BadImageCounter()
    decoder = RowDecoder(np.array([0, 1, 2], np.int32), counter, "/sets/train")
    image = np.frombuffer(b"\xff\xd8", np.uint8)
    assert int(decoder(image, np.int32(2), np.int32(0), np.array(b"eel/00.jpg"))[1]) == 2
    for label in (-1, 3):
        with pytest.raises(UserError, match=f"/sets/train:eel/00.jpg.*label {label}"):
            decoder(image, np.int32(label), np.int32(0), np.array(b"eel/00.jpg"))
        assert counter.fatal is not None and "/sets/train" in str(counter.fatal)


def test_index_file_of_another_layout_falls_back_to_the_records(good_set, tmp_path, monkeypatch):
    """Index files without the label column MindSpore 2.8.0 writes: the labels are read from the records."""
    monkeypatch.setattr(mr_module, "_INDEX_LABEL", "label_9")
    got = create_dataset("mindrecord", root=good_set[1], split="train", shuffle=False)
    assert _labels(got) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    out = str(tmp_path / "bad")
    monkeypatch.undo()
    folder = _write_with_label(good_set[0], out, monkeypatch, image=7, label=-3)
    monkeypatch.setattr(mr_module, "_INDEX_LABEL", "label_9")
    _refused(out, os.path.join(folder, "data.mindrecord"), "label -3", "eel/01.png", RERUN)
