"""Fine-tuning on one's own data: list-file data sets, class weights, the class-balanced sampler,
and their mistakes (each against an independent computation)."""
import os
import sys

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import config  # noqa: E402
from mindcv_res2net.data.dataset import create_dataset  # noqa: E402
from mindcv_res2net.data.sampler import BalancedSampler  # noqa: E402
from mindcv_res2net.errors import UserError  # noqa: E402
from mindcv_res2net.loss.losses import balanced_class_weights, create_loss  # noqa: E402
from fault.test_bad_input import make_image_folder  # noqa: E402

CLASSES = ("cat", "dog", "eel")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("lists") / "data"), classes=CLASSES, per_class=3, size=24)


def _rows(ds):
    return [(bytes(np.asarray(img).tobytes()), int(label))
            for img, label in ds.create_tuple_iterator(num_epochs=1, output_numpy=True)]


def _write_list(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


# ----------------------------------------------------------------------------------------------- list files
def test_a_list_file_gives_the_image_folders_labels_and_images(folder, tmp_path):
    train = os.path.join(folder, "train")
    files = [(c, f) for c in CLASSES for f in sorted(os.listdir(os.path.join(train, c)))]
    seps = ["\t", ",", "   "]
    # labels as names and as indices, three separators, a comment and a blank line
    lines = ["# relative path, label", ""] + [
        f"train/{c}/{f}{seps[k % 3]}{c if k % 2 else CLASSES.index(c)}" for k, (c, f) in enumerate(files)]
    listed = create_dataset("imagenet", root=folder, split="train", shuffle=False,
                            list_file=_write_list(tmp_path / "train.txt", lines), class_list=list(CLASSES))
    scanned = create_dataset("imagenet", root=folder, split="train", shuffle=False)
    assert listed.class_names == scanned.class_names == list(CLASSES)
    assert list(listed.dataset_info.source.paths) == list(scanned.dataset_info.source.paths)
    assert _rows(listed) == _rows(scanned)


def test_list_file_class_names_without_a_class_list(folder, tmp_path):
    by_name = _write_list(tmp_path / "a.txt", ["train/eel/0.png eel", "train/cat/0.png cat"])
    ds = create_dataset("imagenet", root=folder, split="train", shuffle=False, list_file=by_name)
    assert ds.class_names == ["cat", "eel"]  # sorted, as ImageFolder sorts its folders
    assert [label for _, label in _rows(ds)] == [1, 0]
    by_index = _write_list(tmp_path / "b.txt", ["train/eel/0.png\t2", "train/cat/0.png\t0"])
    ds = create_dataset("imagenet", root=folder, split="train", shuffle=False, list_file=by_index)
    assert ds.class_names == ["0", "1", "2"] and [label for _, label in _rows(ds)] == [2, 0]
    # a validation list maps through the training classes
    val = create_dataset("imagenet", root=folder, split="val", shuffle=False, list_file=by_name,
                         class_names=list(CLASSES))
    assert [label for _, label in _rows(val)] == [2, 0]


@pytest.mark.parametrize("line,expected", [
    ("train/cat/missing.png\tcat", ["line 2", "image file not found", "missing.png"]),
    ("train/cat/0.png\t7", ["line 2", "label 7 is out of range", "3 classes"]),
    ("train/cat/0.png\tcow", ["line 2", "unknown class name 'cow'"]),
    ("train/cat/0.png", ["line 2", "is not 'path<TAB>label'"]),
])
def test_a_bad_line_is_one_error_naming_it(folder, tmp_path, line, expected):
    path = _write_list(tmp_path / "bad.txt", ["train/dog/0.png\tdog", line])
    with pytest.raises(UserError) as err:
        create_dataset("imagenet", root=folder, split="train", shuffle=False, list_file=path,
                       class_list=list(CLASSES))
    assert str(path) in str(err.value) and all(e in str(err.value) for e in expected), str(err.value)


@pytest.mark.parametrize("dataset", ["imagenet", "fashion_mnist"])
def test_a_list_file_feeds_the_training_transforms_of_its_data_set(folder, tmp_path, dataset):
    from mindcv_res2net.data.loader import create_loader
    from mindcv_res2net.data.transforms import create_transforms

    path = _write_list(tmp_path / "t.txt", [f"train/{c}/{k}.png\t{c}" for c in CLASSES for k in range(3)])
    listed = create_dataset(dataset, root=folder, split="train", shuffle=True, list_file=path, sampler="balanced")
    scanned = create_dataset(dataset, root=folder, split="train", shuffle=True)  # class folders, same format
    shapes = []
    for ds in (listed, scanned):
        loader = create_loader(ds, 3, drop_remainder=True, is_training=True, num_classes=3, image_resize=16,
                               transform=create_transforms(dataset, image_resize=16, is_training=True))
        images, labels = next(loader.create_tuple_iterator(num_epochs=1, output_numpy=True))
        shapes.append(images.shape)
    assert shapes[0] == shapes[1] == (3, 3, 16, 16)


def test_a_missing_list_file_is_one_error(folder, tmp_path):
    with pytest.raises(UserError, match="list file not found"):
        create_dataset("imagenet", root=folder, split="train", list_file=str(tmp_path / "none.txt"))


# ------------------------------------------------------------------------------------------ class weights
def _np_weighted_ce(x, labels, w, eps, reduction):
    """PyTorch's cross_entropy(weight=w, label_smoothing=eps) for class-index labels, in float64."""
    x = x.astype(np.float64)
    logp = x - x.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    n, c = x.shape
    nll = -logp[np.arange(n), labels] * w[labels]
    smooth = -(logp * w[None, :]).sum(1) / c
    per = (1 - eps) * nll + eps * smooth
    return per.sum() if reduction == "sum" else per.sum() / w[labels].sum()


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_class_weights_equal_a_numpy_weighted_cross_entropy(eps, reduction):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((8, 4)) * 2).astype(np.float32)
    labels = np.array([0, 0, 0, 0, 0, 1, 2, 3], np.int32)
    w = np.array([0.25, 2.0, 2.0, 2.0])
    loss = create_loss("CE", label_smoothing=eps, reduction=reduction, class_weights=list(w))
    got = float(loss(Tensor(x), Tensor(labels)).asnumpy())
    assert got == pytest.approx(_np_weighted_ce(x, labels, w, eps, reduction), rel=1e-5)
    # all-ones weights are the plain loss
    plain = float(create_loss("CE", label_smoothing=eps, reduction=reduction)(Tensor(x), Tensor(labels)).asnumpy())
    ones = create_loss("CE", label_smoothing=eps, reduction=reduction, class_weights=[1.0] * 4)
    assert float(ones(Tensor(x), Tensor(labels)).asnumpy()) == pytest.approx(plain, rel=1e-6)


def test_class_weights_in_binary_cross_entropy():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 2, 1, 0], np.int32)
    w = np.array([1.0, 3.0, 0.5])
    y = np.eye(3)[labels]
    xd = x.astype(np.float64)
    ref = ((np.maximum(xd, 0) - xd * y + np.log1p(np.exp(-np.abs(xd)))) * w[None, :]).mean()
    got = float(create_loss("BCE", class_weights=list(w))(Tensor(x), Tensor(labels)).asnumpy())
    assert got == pytest.approx(ref, rel=1e-5)


def test_balanced_class_weights_are_n_over_classes_times_count():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    np.testing.assert_allclose(balanced_class_weights(labels, 4), [10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1), 0.0])


def test_bad_class_weights_are_one_error():
    with pytest.raises(UserError, match="3 weights for 4 classes|one weight per class"):
        create_loss("CE", class_weights=[1.0, 2.0, 3.0])(Tensor(np.zeros((2, 4), np.float32)),
                                                         Tensor(np.zeros(2, np.int32)))
    with pytest.raises(UserError, match="class_weights"):
        create_loss("CE", class_weights=[1.0, -2.0])
    with pytest.raises(UserError, match="class_weights"):
        create_loss("CE", class_weights=[1.0, 1.0], aug_splits=3)


# -------------------------------------------------------------------------------- the balanced sampler
def test_the_balanced_sampler_draws_classes_uniformly_and_repeats_for_a_seed():
    labels = np.array([0] * 80 + [1] * 15 + [2] * 5)
    sampler = BalancedSampler(labels, seed=7, limit=None)
    counts = np.zeros(3)
    for epoch in range(30):
        counts += np.bincount(labels[sampler.indices(epoch)], minlength=3)
    draws = counts.sum()
    assert draws == 30 * 100
    expected, sd = draws / 3, np.sqrt(draws * (1 / 3) * (2 / 3))
    assert np.all(np.abs(counts - expected) < 5 * sd), counts  # uniform within sampling error
    again = BalancedSampler(labels, seed=7)
    np.testing.assert_array_equal(again.indices(4), sampler.indices(4))
    assert not np.array_equal(sampler.indices(4), sampler.indices(5))
    assert not np.array_equal(BalancedSampler(labels, seed=8).indices(4), sampler.indices(4))


def test_the_balanced_sampler_shards_one_draw_between_ranks():
    labels = np.array([0] * 30 + [1] * 10 + [2] * 2)
    whole = BalancedSampler(labels, seed=3, num_shards=1).indices(2)
    parts = [BalancedSampler(labels, seed=3, num_shards=3, shard_id=r).indices(2) for r in range(3)]
    assert all(len(p) == 14 for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), whole[:42])


def test_the_balanced_sampler_feeds_the_data_set(folder):
    ds = create_dataset("imagenet", root=folder, split="train", shuffle=True, seed=1, sampler="balanced")
    assert ds.get_dataset_size() == 9
    with pytest.raises(UserError, match="sampler"):
        create_dataset("imagenet", root=folder, split="train", sampler="weighted")


# ------------------------------------------------------------------------------------------- the keys
@pytest.mark.parametrize("argv,expected", [
    (["--frozen_stages", "5"], "frozen_stages"),
    (["--frozen_stages", "-2"], "frozen_stages"),
    (["--sampler", "weighted"], "sampler"),
    (["--class_weights", "heavy"], "class_weights"),
])
def test_bad_fine_tuning_keys_are_one_error(argv, expected):
    with pytest.raises(UserError, match=expected):
        config.parse_args(argv, script="train")


def test_fine_tuning_keys_parse():
    args = config.parse_args(["--frozen_stages", "3", "--norm_eval", "true", "--class_weights", "balanced",
                              "--sampler", "balanced", "--train_list", "a.txt", "--val_list", "b.txt"],
                             script="train")
    assert (args.frozen_stages, args.norm_eval, args.class_weights, args.sampler) == (3, True, "balanced", "balanced")
    assert (args.train_list, args.val_list) == ("a.txt", "b.txt")
    args = config.parse_args(["--class_weights", "1", "2.5", "0.5"], script="train")
    assert args.class_weights == [1.0, 2.5, 0.5]
