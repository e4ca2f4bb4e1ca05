"""aug_splits=3 (AugMix + JSD loss): the loss vs numpy, torch and MindCV's own formula; the split
loader vs the plain training pipeline and AugMix applied by hand; a few training steps."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn, ops

from mindcv_res2net.data import create_dataset, create_loader, create_transforms
from mindcv_res2net.data.augmix import AugMix
from mindcv_res2net.data.loader import _SPLIT_SEED_STRIDE
from mindcv_res2net.data.throughput import make_synthetic_jpegs
from mindcv_res2net.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from mindcv_res2net.loss.losses import JSDCrossEntropy, create_loss
from mindcv_res2net.optim.optim_factory import create_optimizer
from mindcv_res2net.training.train_step import TrainStep
from mindcv_res2net.errors import UserError

B, C, S = 5, 7, 3
MODES = [ms.PYNATIVE_MODE, ms.GRAPH_MODE]


def np_log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def np_jsd(logits, labels, eps, reduction="mean", alpha=12.0):
    """AugMix's JSD cross entropy (MindCV / timm definition), float64."""
    n = logits.shape[0] // S
    logp = [np_log_softmax(logits[k * n:(k + 1) * n]) for k in range(S)]
    y = labels[:n]
    classes = logits.shape[1]
    rows = np.eye(classes)[y] if y.ndim == 1 else y.astype(np.float64)
    rows = rows * (1 - eps) + eps / classes
    ce = -(rows * logp[0]).sum(-1)
    ce = ce.sum() if reduction == "sum" else ce.mean()
    probs = [np.exp(lp) for lp in logp]
    log_m = np.log(np.clip(np.mean(probs, axis=0), 1e-7, 1.0))
    kl = sum((p * (lp - log_m)).sum() / n for p, lp in zip(probs, logp))
    return ce + alpha * kl / S


def data(seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((S * B, C)) * scale).astype(np.float32)
    labels = rng.integers(0, C, B).astype(np.int32)
    return logits, labels


@pytest.mark.parametrize("mode", MODES, ids=["pynative", "graph"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_jsd_vs_numpy(mode, eps, reduction):
    ms.set_context(mode=mode)
    logits, labels = data(1)
    loss = create_loss("CE", label_smoothing=eps, reduction=reduction, aug_splits=3)
    assert isinstance(loss, JSDCrossEntropy)
    want = np_jsd(logits, labels, eps, reduction)
    tiled = np.tile(labels, S)  # the loader's 3B labels; B labels give the same
    for lab in (labels, tiled):
        got = float(loss(Tensor(logits), Tensor(lab)).asnumpy())
        assert abs(got - want) < 1e-5 * max(1.0, abs(want))
    # soft labels (one-hot rows) and fp16 logits
    soft = np.eye(C, dtype=np.float32)[tiled]
    assert abs(float(loss(Tensor(logits), Tensor(soft)).asnumpy()) - want) < 1e-5 * max(1.0, abs(want))
    assert loss(Tensor(logits.astype(np.float16)), Tensor(labels)).dtype == ms.float32
    # the JS term is really there: identical splits leave only the CE
    same = np.tile(logits[:B], (S, 1))
    assert abs(float(loss(Tensor(same), Tensor(labels)).asnumpy()) - np_jsd(same, labels, eps, reduction)) < 1e-5
    assert want - np_jsd(same, labels, eps, reduction) > 0.1 or reduction == "sum"


def test_jsd_vs_mindcv_formula():
    """MindCV's JSDCrossEntropy.construct written with the same MindSpore ops it uses."""
    logits, labels = data(2)
    for eps in (0.0, 0.1):
        for reduction in ("mean", "sum"):
            x = Tensor(logits)
            split = ops.split(x, B, 0)
            want = ops.cross_entropy(split[0], Tensor(labels), reduction=reduction, label_smoothing=eps)
            probs = [ops.softmax(t, 1) for t in split]
            log_m = ops.log(ops.clip_by_value(ops.stack(probs).mean(axis=0), 1e-7, 1))
            for p in probs:
                want += 12 * ops.KLDivLoss(reduction="batchmean")(log_m, p) / S
            got = create_loss("CE", eps, reduction=reduction, aug_splits=3)(x, Tensor(np.tile(labels, S)))
            assert abs(float(got.asnumpy()) - float(want.asnumpy())) < 1e-4


def test_jsd_vs_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    logits, labels = data(3)
    for eps in (0.0, 0.1):
        x = torch.tensor(logits, dtype=torch.float64)
        y = torch.tensor(labels, dtype=torch.long)
        parts = torch.split(x, B)
        want = F.cross_entropy(parts[0], y, label_smoothing=eps)
        probs = [F.softmax(p, dim=1) for p in parts]
        log_m = torch.clamp(torch.stack(probs).mean(0), 1e-7, 1).log()
        want = want + 12 * sum(F.kl_div(log_m, p, reduction="batchmean") for p in probs) / S
        got = float(create_loss("CE", eps, aug_splits=3)(Tensor(logits), Tensor(labels)).asnumpy())
        assert abs(got - float(want)) < 1e-5 * max(1.0, abs(float(want)))


def test_jsd_extreme_logits_finite():
    logits, labels = data(4, scale=300.0)  # softmax probabilities underflow to 0
    got = float(create_loss("CE", 0.1, aug_splits=3)(Tensor(logits), Tensor(labels)).asnumpy())
    assert np.isfinite(got)


def test_loss_user_errors():
    with pytest.raises(UserError, match="aug_splits"):
        create_loss("CE", aug_splits=2)
    with pytest.raises(UserError, match="CE"):
        create_loss("BCE", aug_splits=3)
    with pytest.raises(UserError, match="reduction"):
        create_loss("CE", reduction="none", aug_splits=3)


# ---------------------------------------------------------------------------------------------
# loader

@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    return make_synthetic_jpegs(str(tmp_path_factory.mktemp("splits")), n_images=12, size=(40, 32), num_classes=3)


def _batches(root, auto_augment, splits, seed=5, **kw):
    d = create_dataset("imagefolder", root, "train", seed=3, num_parallel_workers=1)
    t = create_transforms("imagefolder", image_resize=24, is_training=True, auto_augment=auto_augment,
                          separate=bool(splits), **kw)
    loader = create_loader(d, 4, drop_remainder=True, is_training=True, transform=t, seed=seed,
                           num_parallel_workers=1, aug_splits=splits)
    out = [(x.copy(), y.copy()) for x, y in loader.create_tuple_iterator(num_epochs=1, output_numpy=True)]
    return out, loader


def _to_uint8(chw):
    mean = np.array(IMAGENET_MEAN, np.float64)[:, None, None] * 255
    std = np.array(IMAGENET_STD, np.float64)[:, None, None] * 255
    return np.clip(np.rint(chw * std + mean), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def test_split_loader_clean_equals_plain_and_aug_equals_augmix(image_root):
    policy = "augmix-m3-w3"
    plain, plain_loader = _batches(image_root, None, 0)
    split, loader = _batches(image_root, policy, 3)
    assert loader.steps_per_epoch == plain_loader.steps_per_epoch == loader.get_dataset_size() == 3
    # AugMix by hand on the clean images, in sample order (1 worker), with the seed of each split
    by_hand = [AugMix(policy, fill=tuple(int(round(v * 255)) for v in IMAGENET_MEAN),
                      seed=5 + _SPLIT_SEED_STRIDE * k) for k in (1, 2)]
    differs = 0
    for (p, py), (s, sy) in zip(plain, split):
        assert s.shape == (12, 3, 24, 24) and s.dtype == np.float32
        assert sy.tolist() == np.tile(py, 3).tolist()
        np.testing.assert_array_equal(s[:4], p)  # the clean split is the plain training pipeline
        for k, op in ((1, by_hand[0]), (2, by_hand[1])):
            for i in range(4):
                want = op(_to_uint8(p[i]))
                assert np.abs(_to_uint8(s[4 * k + i]).astype(int) - want).max() <= 1
        differs += int(np.abs(s[4:8] - s[8:]).max() > 0) + int(np.abs(s[:4] - s[4:8]).max() > 0)
    assert differs >= 4
    again, _ = _batches(image_root, policy, 3)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(again, split))  # deterministic given the seed


def test_split_loader_user_errors(image_root):
    d = create_dataset("imagefolder", image_root, "train", num_parallel_workers=1)
    sep = create_transforms("imagefolder", image_resize=24, is_training=True, auto_augment="augmix-m3-w3",
                            separate=True)
    with pytest.raises(UserError, match="mixup"):
        create_loader(d, 4, is_training=True, transform=sep, mixup=0.2, aug_splits=3)
    with pytest.raises(UserError, match="auto_augment"):
        create_loader(d, 4, is_training=True, aug_splits=3,
                      transform=create_transforms("imagefolder", image_resize=24, is_training=True, separate=True))
    with pytest.raises(UserError, match="separate=True"):
        create_loader(d, 4, is_training=True, aug_splits=3, transform=sep[0] + sep[1] + sep[2])
    with pytest.raises(UserError, match="aug_splits"):
        create_loader(d, 4, is_training=True, transform=sep, aug_splits=2)


class TinyNet(nn.Cell):
    def __init__(self, num_classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, has_bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.pool = ops.ReduceMean(keep_dims=False)
        self.fc = nn.Dense(4, num_classes)

    def construct(self, x):
        return self.fc(self.pool(ops.relu(self.bn(self.conv(x))), (2, 3)))


def test_train_steps_with_aug_splits(image_root):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    split, _ = _batches(image_root, "augmix-m3-w3", 3, re_prob=0.5)
    net = TinyNet()
    opt = create_optimizer(net, "momentum", lr=0.05, momentum=0.9, weight_decay=0.0)
    loss_fn = create_loss("CE", 0.1, aug_splits=3)
    step = TrainStep(net, loss_fn, opt)
    step.set_train()
    before = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    for images, labels in split:
        want = np_jsd(net(Tensor(images)).asnumpy(), labels, 0.1)  # train mode: batch statistics
        loss, overflow, _ = step(Tensor(images), Tensor(labels))
        assert not bool(overflow.asnumpy())
        assert np.isfinite(float(loss.asnumpy()))
        assert abs(float(loss.asnumpy()) - want) < 1e-3 * max(1.0, abs(want))
    assert any(np.abs(p.asnumpy() - before[p.name]).max() > 0 for p in net.trainable_params())
