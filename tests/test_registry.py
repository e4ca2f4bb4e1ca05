"""The model registry: one registration per variant, and everything that derives from it (names,
aliases, configs, published weights, the converter's guess, the PyTorch reference, table order)."""
import ast
import dataclasses
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore.nn.utils import no_init_parameters

from mindcv_res2net import UserError, create_model, list_models
from mindcv_res2net.weights.torch_conversion import convert_state_dict, guess_model_name, registered_signatures
from mindcv_res2net.weights import pretrained as P
from mindcv_res2net.models.registry import (ModelCfg, get_model_cfg, is_model, official, register_model,
                                            resolve_name, unregister_model)
from mindcv_res2net.models.res2net import Res2Net, _cfg

MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mindcv_res2net", "models")


def _variant_modules():
    """The model modules in the order ``models/__init__.py`` imports them (``from . import ...``)."""
    init = ast.parse(open(os.path.join(MODELS_DIR, "__init__.py"), encoding="utf-8").read())
    return [a.name for node in init.body if isinstance(node, ast.ImportFrom) and node.level == 1
            and node.module is None for a in node.names]


def _registrations_in_source_order():
    """The variant names as the source registers them, read without importing the package: each
    variant module's ``register_model(..., name=...)`` calls in file order, the modules in import
    order (the README table's order)."""
    names = []
    for module in _variant_modules():
        tree = ast.parse(open(os.path.join(MODELS_DIR, f"{module}.py"), encoding="utf-8").read())
        for node in tree.body:
            call = node.value if isinstance(node, ast.Expr) else None
            if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "register_model":
                names += [k.value.value for k in call.keywords if k.arg == "name"]
    return names


TABLE_ORDER = _registrations_in_source_order()


def test_every_model_module_that_registers_is_imported_by_the_package():
    registering = sorted(f[:-3] for f in os.listdir(MODELS_DIR) if f.endswith(".py")
                         and "\nregister_model(" in open(os.path.join(MODELS_DIR, f), encoding="utf-8").read())
    assert registering and registering == sorted(_variant_modules())
    assert "res2net50" in TABLE_ORDER and "res2next_dla60" in TABLE_ORDER


def _bench_torch():
    """``mindcv_res2net.benchmark.torch_models`` where torch imports, else None."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    from mindcv_res2net.benchmark import torch_models as bench_torch
    return bench_torch


def _shapes(name):
    with no_init_parameters():
        net = create_model(name)
    return {n: tuple(p.shape) for n, p in net.parameters_dict().items()}


def test_registration_order_is_the_table_order():
    assert list_models(include_aliases=False, sort=False) == TABLE_ORDER
    assert list_models(include_aliases=False) == sorted(TABLE_ORDER)


@pytest.mark.parametrize("name", TABLE_ORDER)
def test_the_converter_recognises_every_registered_variant(name):
    assert guess_model_name(_shapes(name)) == name


def test_signatures_are_distinct_and_derived_from_the_configs():
    signatures = registered_signatures()
    assert sorted(signatures.values()) == sorted(TABLE_ORDER)  # no two variants look alike
    assert signatures[("res2net", True, (3, 4, 23, 3), 26, 3, 1)] == "res2net101_v1b"
    assert signatures[("res2net_dla", 32, 3, 8)] == "res2next_dla60"


def test_the_torch_reference_accepts_exactly_the_names_create_model_accepts():
    bench_torch = _bench_torch()
    if bench_torch is None:
        pytest.skip("needs torch")
    assert list(bench_torch.TORCH_ARCHS) == TABLE_ORDER
    assert bench_torch.TIMM_NAMES["res2net50_v1b"] == "res2net50d" and bench_torch.TIMM_NAMES["res2net152"] is None
    assert bench_torch.TIMM_NAMES["res2next_dla60"] == "dla60_res2next"
    for name in list_models():
        assert bench_torch.create_torch_model(name, num_classes=2) is not None
    for name in ("dla60_res2net", "res2net51"):  # timm's DLA names are not aliases here, nor there
        with pytest.raises(UserError):
            create_model(name)
        with pytest.raises(KeyError):
            bench_torch.create_torch_model(name)


def test_a_new_variant_is_one_registration():
    """Registering a tiny variant with its config is all it takes: every consumer sees it."""
    name, alias = "res2net_tiny_test", "res2net_tiny_alias"
    register_model(Res2Net, name=name, aliases=(alias,), cfg=_cfg(
        (1, 1, 2, 1), base_width=8, scale=3, timm_name="res2net_tiny_timm",
        weights=(official("res2net_tiny_8w_3s-0123abcd.pth", 50.0, 75.0),)))
    try:
        assert is_model(alias) and resolve_name(alias) == name
        assert {name, alias} <= set(list_models()) and {name, alias} <= set(list_models(pretrained=True))
        assert list_models(include_aliases=False, sort=False)[-1] == name  # the benchmark table's last row
        assert get_model_cfg(alias).arch["layers"] == (1, 1, 2, 1)

        net = create_model(alias, num_classes=5)
        assert net.default_cfg["architecture"] == name and net.default_cfg["first_conv"] == "conv1"
        net.set_train(False)
        x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
        assert net(ms.Tensor(x)).shape == (1, 5)

        src = P.get_source(alias)
        assert (src.tag, src.sha256, src.origin, src.licence) == ("official", "0123abcd", "res2net_tiny_8w_3s",
                                                                  P.CC_BY_NC_SA)
        assert P.get_pretrained_cfg(name)["sources"]["official"]["check"].startswith("sha256 prefix (8 hex")
        assert name in P.models_with_weights()

        shapes = {n: tuple(p.shape) for n, p in net.parameters_dict().items()}
        assert guess_model_name(shapes) == name

        bench_torch = _bench_torch()
        if bench_torch is not None:
            assert bench_torch.TIMM_NAMES[name] == "res2net_tiny_timm" and name in bench_torch.TORCH_ARCHS
            torch_net = bench_torch.create_torch_model(alias, num_classes=5)
            state = {k: v.detach().numpy() for k, v in torch_net.state_dict().items()}
            assert guess_model_name({k: v.shape for k, v in state.items()}) == name
            assert list(convert_state_dict(state, alias)) == list(net.parameters_dict())

        with pytest.raises(ValueError, match="already registered"):
            register_model(Res2Net, name=alias, cfg=_cfg((1, 1, 1, 1)))
    finally:
        unregister_model(name)
    assert not is_model(name) and not is_model(alias) and name not in list_models(pretrained=True)
    assert guess_model_name(shapes) is None
    with pytest.raises(UserError, match="no published weights"):
        P.get_source(name)


def test_a_plain_function_registers_without_a_config():
    @register_model
    def res2net_plain_test(**kwargs):
        return Res2Net((1, 1, 1, 1), base_width=8, scale=2, **kwargs)

    try:
        assert get_model_cfg("res2net_plain_test") == ModelCfg()
        net = create_model("res2net_plain_test", num_classes=3)
        assert net.default_cfg["weights"] == {} and net.default_cfg["input_size"] == (3, 224, 224)
        assert "res2net_plain_test" not in registered_signatures().values()
        assert "res2net_plain_test" not in list_models(pretrained=True)
        bench_torch = _bench_torch()
        if bench_torch is not None:
            assert "res2net_plain_test" not in bench_torch.TORCH_ARCHS
    finally:
        unregister_model("res2net_plain_test")


def test_configs_are_read_only():
    cfg = get_model_cfg("res2net50")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.crop_pct = 0.9
    with pytest.raises(TypeError):
        cfg.arch["scale"] = 8
    assert cfg.weights[0].tag == "mindcv" and cfg.timm_name == "res2net50_26w_4s"
