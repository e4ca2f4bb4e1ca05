"""aug_repeats (repeated augmentation) vs an independent re-computation of MindCV's RepeatAugSampler."""
import math

import numpy as np
import pytest

from mindcv_res2net.data import create_dataset, create_loader, create_transforms
from mindcv_res2net.data.sampler import RepeatAugSampler
from mindcv_res2net.data.throughput import make_synthetic_jpegs
from mindcv_res2net.errors import UserError


def mindcv_indices(n, num_shards, rank, num_repeats, epoch, seed=0, shuffle=True, selected_round=256):
    """MindCV's RepeatAugSampler.__iter__ (mindcv/data/distributed_sampler.py), in plain lists; its
    RandomState(epoch) becomes RandomState(seed + epoch)."""
    num_samples = int(math.ceil(n * num_repeats / num_shards))
    total_size = num_samples * num_shards
    if selected_round:
        num_selected = int(math.floor(n // selected_round * selected_round / num_shards))
    else:
        num_selected = int(math.ceil(n / num_shards))
    if shuffle:
        indices = np.random.RandomState(seed=seed + epoch).permutation(n).tolist()
    else:
        indices = list(range(n))
    indices = [ele for ele in indices for _ in range(num_repeats)]
    indices += indices[:total_size - len(indices)]
    assert len(indices) == total_size
    indices = indices[rank:total_size:num_shards]
    assert len(indices) == num_samples
    return indices, indices[:num_selected]


@pytest.mark.parametrize("n,world,repeats,seed", [(600, 1, 3, 0), (600, 2, 3, 0), (777, 2, 3, 5),
                                                   (1030, 2, 2, 11), (513, 1, 4, 2)])
def test_indices_equal_mindcv_selected_round_256(n, world, repeats, seed):
    for epoch in (0, 3):
        for rank in range(world):
            sampler = RepeatAugSampler(n, repeats, seed=seed, num_shards=world, shard_id=rank,
                                       selected_round=256)
            _, want = mindcv_indices(n, world, rank, repeats, epoch, seed=seed)
            assert sampler.samples_per_epoch() == len(want) > 0
            assert sampler.indices(epoch).tolist() == want


@pytest.mark.parametrize("n,world,repeats", [(40, 1, 3), (40, 2, 3), (41, 2, 3), (37, 3, 3), (50, 4, 2)])
def test_indices_are_mindcv_create_dataset_lists(n, world, repeats):
    """selected_round=0 (MindCV's create_dataset): MindCV's list cut to n // world per rank."""
    for rank in range(world):
        sampler = RepeatAugSampler(n, repeats, seed=7, num_shards=world, shard_id=rank)
        _, want = mindcv_indices(n, world, rank, repeats, 2, seed=7, selected_round=0)
        assert len(want) == math.ceil(n / world)
        got = sampler.indices(2).tolist()
        assert len(got) == n // world and got == want[:n // world]
    # without shuffle: file order, repeated
    got = RepeatAugSampler(n, repeats, shuffle=False, num_shards=world, shard_id=0).indices(0).tolist()
    assert got == mindcv_indices(n, world, 0, repeats, 0, shuffle=False, selected_round=0)[1][:n // world]


def test_small_data_falls_back_to_plain_epoch_length():
    # fewer than 256 * world images: MindCV's rounding would leave 0 samples
    assert RepeatAugSampler(100, 3, num_shards=2, shard_id=1, selected_round=256).samples_per_epoch() == 50
    with pytest.raises(UserError):
        RepeatAugSampler(1, 3, num_shards=2, shard_id=0)


@pytest.mark.parametrize("world,repeats", [(1, 3), (2, 3), (3, 3), (4, 2)])
def test_each_image_repeated_across_ranks(world, repeats):
    n = 60
    lists = [RepeatAugSampler(n, repeats, seed=1, num_shards=world, shard_id=r).indices(4) for r in range(world)]
    assert all(len(x) == n // world for x in lists)  # the epoch length of plain training
    counts = np.bincount(np.concatenate(lists), minlength=n)
    order = np.random.RandomState(1 + 4).permutation(n)
    # the first images of the epoch's permutation appear `repeats` times each (the last one kept
    # may be cut short by the truncation), the rest of the permutation not at all
    kept = -(-n // repeats)
    assert (counts[order[:n // repeats]] == repeats).all()
    assert counts[order[kept:]].sum() == 0 and counts.sum() == world * (n // world)
    if world >= repeats:  # the copies of an image are on different ranks
        for i in order[:n // repeats]:
            assert sum(int(i in x) for x in lists) == repeats


def test_epochs_differ_and_are_pure():
    s = RepeatAugSampler(64, 3, seed=3, num_shards=2, shard_id=1)
    assert s.indices(0).tolist() != s.indices(1).tolist()
    again = RepeatAugSampler(64, 3, seed=3, num_shards=2, shard_id=1, start_epoch=1)
    assert again.indices(1).tolist() == s.indices(1).tolist()
    assert list(iter(again)) == s.indices(1).tolist()  # the first pass reads start_epoch
    assert list(iter(again)) == s.indices(2).tolist()


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    return make_synthetic_jpegs(str(tmp_path_factory.mktemp("ra")), n_images=24, size=(40, 32), num_classes=3)


def _read_indices(dataset, source, epochs=1):
    """The file indices the pipeline delivers, epoch by epoch (identified by the encoded bytes)."""
    by_bytes = {bytes(source[i][0]): i for i in range(len(source))}
    assert len(by_bytes) == len(source)
    it = dataset.create_tuple_iterator(num_epochs=epochs, output_numpy=True)
    return [[by_bytes[bytes(img)] for img, _ in it] for _ in range(epochs)]  # one pass per epoch


@pytest.mark.parametrize("world", [1, 2])
def test_pipeline_reads_mindcv_order_and_resumes(image_root, world):
    n = 24
    for rank in range(world):
        plain = create_dataset("imagefolder", image_root, "train", seed=4, num_shards=world if world > 1 else None,
                               shard_id=rank if world > 1 else None, num_parallel_workers=1)
        ra = create_dataset("imagefolder", image_root, "train", seed=4, num_shards=world if world > 1 else None,
                            shard_id=rank if world > 1 else None, num_parallel_workers=1, aug_repeats=3)
        assert ra.get_dataset_size() == plain.get_dataset_size() == n // world
        assert ra.dataset_info.samples_per_epoch == n // world
        got = _read_indices(ra, ra.dataset_info.source, epochs=2)
        for epoch in (0, 1):
            assert got[epoch] == mindcv_indices(n, world, rank, 3, epoch, seed=4, selected_round=0)[1][:n // world]
        assert got[0] != got[1]
        resumed = create_dataset("imagefolder", image_root, "train", seed=4, num_shards=world if world > 1 else None,
                                 shard_id=rank if world > 1 else None, num_parallel_workers=1, aug_repeats=3,
                                 start_epoch=1)
        assert _read_indices(resumed, resumed.dataset_info.source)[0] == got[1]


def test_loader_steps_unchanged_and_repeats_augmented_independently(image_root):
    steps = []
    for repeats in (0, 3):
        d = create_dataset("imagefolder", image_root, "train", seed=1, num_parallel_workers=1, aug_repeats=repeats)
        t = create_transforms("imagefolder", image_resize=16, is_training=True)
        loader = create_loader(d, 4, drop_remainder=True, is_training=True, transform=t, seed=2,
                               num_parallel_workers=1)
        steps.append(loader.get_dataset_size())
        if repeats:
            images = np.concatenate([x for x, _ in loader.create_tuple_iterator(num_epochs=1, output_numpy=True)])
            order = d.dataset_info.sampler.indices(0)
            # consecutive copies of the same file (1 rank): different random crops / flips
            firsts = [i for i in range(0, len(order) - 1, 3) if order[i] == order[i + 1]]
            assert firsts and all(np.abs(images[i] - images[i + 1]).max() > 0 for i in firsts)
    assert steps[0] == steps[1] == 24 // 4


def test_aug_repeats_one_is_plain_and_user_errors(image_root):
    plain = create_dataset("imagefolder", image_root, "train", seed=2, num_parallel_workers=1)
    one = create_dataset("imagefolder", image_root, "train", seed=2, num_parallel_workers=1, aug_repeats=1)
    assert one.dataset_info.sampler.indices(3).tolist() == plain.dataset_info.sampler.indices(3).tolist()
    with pytest.raises(UserError, match="num_samples"):
        create_dataset("imagefolder", image_root, "train", num_samples=10, aug_repeats=3)
    with pytest.raises(UserError, match="aug_repeats"):
        create_dataset("imagefolder", image_root, "train", aug_repeats=-2)
    with pytest.raises(UserError, match="aug_repeats"):
        create_dataset("imagefolder", image_root, "train", aug_repeats=2.5)
