"""Mixup / CutMix: soft labels sum to 1 and carry the true mixing ratio."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from mindcv_res2net.data import MixupCutmix, create_dataset, create_loader, create_transforms
from mindcv_res2net.data.mixup import cutmix_box
from mindcv_res2net.errors import UserError

B, K = 6, 5


def _batch():
    """Constant images: sample i has value i everywhere; labels differ from the reversed partner."""
    images = np.stack([np.full((3, 16, 20), float(i), np.float32) for i in range(B)])
    labels = np.array([0, 1, 2, 3, 4, 0], np.int32)
    return images, labels


def test_mixup_labels_match_image_mixing_ratio():
    mixer = MixupCutmix(mixup_alpha=0.4, cutmix_alpha=0.0, prob=1.0, num_classes=K)
    images, labels = _batch()
    for seed in range(5):
        out, soft = mixer.mix(images, labels, np.random.default_rng(seed))
        mode, lam, _ = mixer.last
        assert mode == "mixup" and 0.0 <= lam <= 1.0
        assert soft.shape == (B, K) and soft.dtype == np.float32
        np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-6)
        for i in range(B):
            partner = B - 1 - i
            # pixel value = lam * i + (1 - lam) * partner -> recover lam from the image itself
            if i != partner:
                lam_img = (out[i, 0, 0, 0] - partner) / (i - partner)
                np.testing.assert_allclose(lam_img, lam, atol=1e-5)
            if labels[i] != labels[partner]:
                np.testing.assert_allclose(soft[i, labels[i]], lam, atol=1e-6)
                np.testing.assert_allclose(soft[i, labels[partner]], 1 - lam, atol=1e-6)


def test_cutmix_label_weight_is_pasted_area_fraction():
    mixer = MixupCutmix(mixup_alpha=0.0, cutmix_alpha=1.0, prob=1.0, num_classes=K)
    images, labels = _batch()
    seen_partial = False
    for seed in range(20):
        out, soft = mixer.mix(images, labels, np.random.default_rng(seed))
        mode, lam, box = mixer.last
        assert mode == "cutmix"
        np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-6)
        for i in range(B):
            partner = B - 1 - i
            pasted = float((out[i] == partner).mean()) if i != partner else None
            if pasted is not None:
                np.testing.assert_allclose(pasted, 1.0 - lam, atol=1e-6)  # area really pasted
            if labels[i] != labels[partner]:
                np.testing.assert_allclose(soft[i, labels[partner]], 1.0 - lam, atol=1e-6)
                np.testing.assert_allclose(soft[i, labels[i]], lam, atol=1e-6)
        seen_partial |= 0.0 < lam < 1.0
    assert seen_partial


def test_cutmix_box_clipped_and_sized():
    rng = np.random.default_rng(0)
    for lam in (0.0, 0.3, 0.9, 1.0):
        y0, y1, x0, x1 = cutmix_box(32, 48, lam, rng)
        assert 0 <= y0 <= y1 <= 32 and 0 <= x0 <= x1 <= 48
        assert (y1 - y0) <= int(32 * np.sqrt(1 - lam)) + 1


def test_smoothing_switch_and_no_mix():
    images, labels = _batch()
    mixer = MixupCutmix(0.8, 1.0, prob=1.0, switch_prob=0.5, label_smoothing=0.1, num_classes=K)
    modes = set()
    for seed in range(30):
        _, soft = mixer.mix(images, labels, np.random.default_rng(seed))
        modes.add(mixer.last[0])
        np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-6)
        assert soft.min() >= 0.1 / K - 1e-7
    assert modes == {"mixup", "cutmix"}
    off = MixupCutmix(0.8, 1.0, prob=0.0, num_classes=K)
    out, soft = off.mix(images, labels, np.random.default_rng(0))
    assert off.last[0] == "none" and np.array_equal(out, images)
    assert np.array_equal(soft.argmax(1), labels) and np.all(soft.max(1) == 1.0)
    # same (seed, rank, epoch, batch) -> same draw
    a = MixupCutmix(0.4, 0.0, num_classes=K, seed=7, rank=1)
    b = MixupCutmix(0.4, 0.0, num_classes=K, seed=7, rank=1)

    class Info:
        def get_epoch_num(self):
            return 3

        def get_batch_num(self):
            return 9

    ra = a(list(images), list(labels), Info())
    rb = b(list(images), list(labels), Info())
    assert np.array_equal(np.stack(ra[1]), np.stack(rb[1]))
    with pytest.raises(UserError, match="label out of range"):
        MixupCutmix(0.4, num_classes=3).mix(images, labels, np.random.default_rng(0))


def test_loader_soft_labels_with_mixup_int_labels_without(tmp_path):
    for c in range(3):
        for k in range(4):
            buf = io.BytesIO()
            Image.new("RGB", (20, 16), (40 * c + k, 90, 10 * k)).save(buf, "JPEG")
            path = tmp_path / "train" / f"c{c}" / f"{k}.jpg"
            os.makedirs(path.parent, exist_ok=True)
            path.write_bytes(buf.getvalue())
    t = create_transforms("imagenet", image_resize=16, is_training=True)
    ds = create_dataset("imagenet", root=str(tmp_path), split="train", shuffle=True, seed=0)
    mixed = create_loader(ds, 4, drop_remainder=True, is_training=True, mixup=0.2, cutmix=1.0, cutmix_prob=1.0,
                          num_classes=10, transform=t, seed=0)
    n = 0
    for images, labels in mixed.create_tuple_iterator(num_epochs=1, output_numpy=True):
        assert images.shape == (4, 3, 16, 16) and labels.shape == (4, 10) and labels.dtype == np.float32
        np.testing.assert_allclose(labels.sum(1), 1.0, rtol=1e-6)
        assert labels[:, 3:].max() == 0.0  # only the 3 real classes carry weight
        n += 1
    assert n == mixed.steps_per_epoch == 3
    ds = create_dataset("imagenet", root=str(tmp_path), split="train", shuffle=True, seed=0)
    plain = create_loader(ds, 4, drop_remainder=True, is_training=True, transform=t, seed=0)
    images, labels = next(plain.create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert labels.shape == (4,) and labels.dtype == np.int32
