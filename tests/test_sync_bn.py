"""sync_bn: every BatchNorm2d becomes a SyncBatchNorm with the same parameters, names and values,
and the network really runs the new cells (SequentialCell keeps a cached list of its children).

SyncBatchNorm computes only on GPU / Ascend with several ranks; on CPU the conversion is tested
(construction needs no device) and the CPU refusal too. A GPU / Ascend run would show the sync.
"""
import logging
from types import SimpleNamespace

import numpy as np
from mindspore import communication, nn

from mindcv_res2net.training.data_setup import convert_sync_bn
from mindcv_res2net.models.factory import create_model


def _params(net):
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


def test_convert_sync_bn_replaces_every_batchnorm_in_place(monkeypatch):
    net = create_model("res2net50_v1b", num_classes=10)  # BN inside SequentialCells (stem, shortcuts)
    before = _params(net)
    n_bn = sum(isinstance(c, nn.BatchNorm2d) for _, c in net.cells_and_names())
    monkeypatch.setattr(communication, "get_group_size", lambda *a, **k: 2)
    convert_sync_bn(net, SimpleNamespace(device_target="GPU"))
    cells = [c for _, c in net.cells_and_names()]
    assert not any(isinstance(c, nn.BatchNorm2d) for c in cells)
    assert sum(isinstance(c, nn.SyncBatchNorm) for c in cells) == n_bn == 87  # 85 in res2net50, 2 more in the v1b stem
    for cell in cells:
        if isinstance(cell, nn.SequentialCell):  # what construct() iterates
            assert cell.cell_list == list(cell.name_cells().values())
            assert not any(isinstance(c, nn.BatchNorm2d) for c in cell.cell_list)
    assert isinstance(net.bn1, nn.SyncBatchNorm) and isinstance(net.layer1[0].bns[0], nn.SyncBatchNorm)
    after = _params(net)
    assert sorted(after) == sorted(before)  # checkpoints keep their keys
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_convert_sync_bn_on_cpu_or_one_rank_keeps_batchnorm(monkeypatch, caplog):
    net = create_model("res2net50", num_classes=10)
    with caplog.at_level(logging.WARNING, logger="mindcv_res2net"):
        convert_sync_bn(net, SimpleNamespace(device_target="CPU"))
    assert "not available on CPU" in caplog.text
    monkeypatch.setattr(communication, "get_group_size", lambda *a, **k: 1)
    convert_sync_bn(net, SimpleNamespace(device_target="GPU"))
    assert not any(isinstance(c, nn.SyncBatchNorm) for _, c in net.cells_and_names())
