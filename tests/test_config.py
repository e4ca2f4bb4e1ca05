"""Tests for config.py: precedence, validation, error messages, recipes, dump / save."""
import glob
import os
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import config  # noqa: E402
from mindcv_res2net.errors import UserError  # noqa: E402

RECIPE_DIR = os.path.join(ROOT, "configs", "res2net")


def _yaml(tmp_path, text, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def _err(argv, script="train"):
    with pytest.raises(UserError) as info:
        config.parse_args(argv, script=script)
    return str(info.value)


# ----------------------------------------------------------------------------- defaults
def test_defaults_follow_mindcv_and_brief():
    d = config.get_defaults()
    expected = {
        "mode": 0, "distribute": "auto", "device_target": "auto", "dataset": "imagenet",
        "train_split": "train", "val_split": "val", "batch_size": 128, "image_resize": 224,
        "scale": [0.08, 1.0], "ratio": [0.75, 1.333], "hflip": 0.5, "crop_pct": 0.875,
        "interpolation": "bilinear", "mean": [123.675, 116.28, 103.53], "ckpt_save_dir": "./ckpt",
        "ckpt_save_policy": "latest_k", "weight_decay_filter": "disable", "loss": "CE",
        "amp_level": "O0", "loss_scale_type": "fixed", "resume": None, "dry_run": False,
        "strict_data": False, "sync_bn": False, "class_list": None, "num_samples": None,
        "gradient_accumulation_steps": 1, "multi_step_decay_milestones": [30, 60, 90],
    }
    for key, value in expected.items():
        assert d[key] == value, key
    # fresh copies: mutating one result does not leak into the next
    d["scale"].append(5)
    assert config.get_defaults()["scale"] == [0.08, 1.0]


def test_parse_without_args_gives_defaults():
    args = config.parse_args([])
    defaults = config.get_defaults()
    assert set(config.config_keys()) <= set(vars(args))
    for key in config.config_keys():
        assert getattr(args, key) == defaults[key], key
    assert args.config is None


# ----------------------------------------------------------------------------- precedence
PRECEDENCE = [
    # key, yaml text value, yaml parsed, cli tokens, cli parsed
    ("lr", "0.05", 0.05, ["0.2"], 0.2),
    ("batch_size", "16", 16, ["8"], 8),
    ("pretrained", "true", True, ["false"], False),
    ("scale", "[0.2, 0.9]", [0.2, 0.9], ["0.3", "1.0"], [0.3, 1.0]),
    ("opt", "momentum", "momentum", ["adamw"], "adamw"),
    ("auto_augment", "randaug-m9-mstd0.5", "randaug-m9-mstd0.5", ["None"], None),
    ("distribute", "false", False, ["auto"], "auto"),
]


@pytest.mark.parametrize("key,ytext,yval,cli,cval", PRECEDENCE, ids=[p[0] for p in PRECEDENCE])
def test_precedence_default_yaml_cli(tmp_path, key, ytext, yval, cli, cval):
    default = config.get_defaults()[key]
    assert default != yval and yval != cval   # the test can only tell levels apart if they differ
    path = _yaml(tmp_path, f"{key}: {ytext}\n")
    assert getattr(config.parse_args([]), key) == default
    assert getattr(config.parse_args(["-c", path]), key) == yval
    assert getattr(config.parse_args(["-c", path, f"--{key}"] + cli), key) == cval
    # the command line wins wherever -c appears
    assert getattr(config.parse_args([f"--{key}"] + cli + ["--config", path]), key) == cval


def test_yaml_keys_not_on_cli_keep_yaml_values(tmp_path):
    path = _yaml(tmp_path, "lr: 0.3\nepoch_size: 7\n")
    args = config.parse_args(["-c", path, "--lr", "0.01"])
    assert args.lr == 0.01 and args.epoch_size == 7 and args.config == path


# ----------------------------------------------------------------------------- unknown keys
def test_unknown_yaml_key_names_closest(tmp_path):
    path = _yaml(tmp_path, "lr: 0.1\nwarmup_epoch: 3\n")
    msg = _err(["-c", path])
    assert "'warmup_epoch'" in msg and "'warmup_epochs'" in msg and path in msg


def test_unknown_cli_key_names_closest(capsys):
    msg = _err(["--batchsize", "8"])
    assert "'--batchsize'" in msg and "'--batch_size'" in msg
    msg = _err(["--label_smothing=0.1"])
    assert "'--label_smoothing'" in msg
    out, err = capsys.readouterr()
    assert out == "" and "usage" not in err      # no argparse usage dump


def test_unknown_key_without_close_match():
    msg = _err(["--zzzzqqq", "1"])
    assert "'--zzzzqqq'" in msg and "--help" in msg


def test_argparse_errors_become_user_errors():
    msg = _err(["--lr"])                          # value missing
    assert "--lr" in msg
    msg = _err(["stray_value"])
    assert "stray_value" in msg


def test_json_only_for_validate(tmp_path):
    args = config.parse_args(["--json", "out.json"], script="validate")
    assert args.json == "out.json"
    assert config.parse_args([], script="validate").json is None
    assert "'--json'" in _err(["--json", "out.json"], script="train")
    assert "json" not in config.config_keys("train")
    with pytest.raises(UserError):
        config.parse_args([], script="export")


# ----------------------------------------------------------------------------- types
@pytest.mark.parametrize("argv,key,word,bad", [
    (["--lr", "fast"], "lr", "number", "fast"),
    (["--batch_size", "3.5"], "batch_size", "integer", "3.5"),
    (["--pretrained", "maybe"], "pretrained", "boolean", "maybe"),
    (["--scale", "a", "b"], "scale", "list of numbers", "a b"),
    (["--distribute", "sometimes"], "distribute", "auto", "sometimes"),
])
def test_wrong_type_on_cli(argv, key, word, bad):
    msg = _err(argv)
    assert f"'{key}'" in msg and word in msg and bad in msg


def test_wrong_type_in_yaml(tmp_path):
    msg = _err(["-c", _yaml(tmp_path, "batch_size: abc\n")])
    assert "'batch_size'" in msg and "integer" in msg and "abc" in msg
    msg = _err(["-c", _yaml(tmp_path, "epoch_size: true\n")])      # a bool is not an int
    assert "'epoch_size'" in msg and "True" in msg
    msg = _err(["-c", _yaml(tmp_path, "scale: 0.5\n")])
    assert "'scale'" in msg and "list" in msg
    msg = _err(["-c", _yaml(tmp_path, "model: ~\n")])               # not nullable
    assert "'model'" in msg and "None" in msg


def test_yaml_numbers_written_as_text_are_numbers(tmp_path):
    # PyYAML reads 1e-4 (no dot) as a string; numeric keys still take it
    args = config.parse_args(["-c", _yaml(tmp_path, "weight_decay: 1e-4\nepoch_size: 10.0\n")])
    assert args.weight_decay == pytest.approx(1e-4) and isinstance(args.weight_decay, float)
    assert args.epoch_size == 10 and isinstance(args.epoch_size, int)


# ----------------------------------------------------------------------------- choices, ranges
@pytest.mark.parametrize("argv,key,bad,valid", [
    (["--opt", "sgdd"], "opt", "sgdd", ["momentum", "lamb", "lion"]),
    (["--amp_level", "O5"], "amp_level", "O5", ["O0", "O3"]),
    (["--scheduler", "cosine"], "scheduler", "cosine", ["cosine_decay", "one_cycle"]),
    (["--dataset", "svhn"], "dataset", "svhn", ["fashion_mnist", "imagenet"]),
    (["--mode", "2"], "mode", "2", ["0", "1"]),
    (["--ckpt_save_policy", "best"], "ckpt_save_policy", "best", ["top_k", "latest_k"]),
])
def test_bad_choice_lists_valid_values(argv, key, bad, valid):
    msg = _err(argv)
    assert f"'{key}'" in msg and bad in msg
    for v in valid:
        assert v in msg


def test_choices_are_case_folded():
    args = config.parse_args(["--opt", "SGD", "--amp_level", "o2", "--device_target", "gpu",
                              "--loss", "bce", "--dataset", "Fashion_MNIST"])
    assert (args.opt, args.amp_level, args.device_target, args.loss, args.dataset) == \
        ("sgd", "O2", "GPU", "BCE", "fashion_mnist")


@pytest.mark.parametrize("argv,key", [
    (["--batch_size", "0"], "batch_size"),
    (["--batch_size=-4"], "batch_size"),
    (["--lr=-0.1"], "lr"),
    (["--num_classes", "0"], "num_classes"),
    (["--epoch_size", "0"], "epoch_size"),
    (["--hflip", "1.5"], "hflip"),
    (["--label_smoothing", "1.0"], "label_smoothing"),
    (["--scale", "0.9", "0.1"], "scale"),
    (["--std", "0", "1", "1"], "std"),
    (["--multi_step_decay_milestones", "60", "30"], "multi_step_decay_milestones"),
    (["--gradient_accumulation_steps", "0"], "gradient_accumulation_steps"),
])
def test_plainly_wrong_values_are_rejected(argv, key):
    assert f"'{key}'" in _err(argv)


def test_range_error_in_yaml_names_file(tmp_path):
    path = _yaml(tmp_path, "lr: -1\n")
    msg = _err(["-c", path])
    assert "'lr'" in msg and path in msg


def test_mean_std_lengths_must_match():
    msg = _err(["--mean", "0.5", "0.5", "0.5", "--std", "0.2"])
    assert "'mean'" in msg and "'std'" in msg


# ----------------------------------------------------------------------------- YAML files
def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = _yaml(tmp_path, "lr: 0.1\nbatch_size: 32\n  opt: sgd\nmodel: x\n", "broken.yaml")
    msg = _err(["-c", path])
    assert path in msg and "line 3" in msg


def test_missing_config_file_named(tmp_path):
    path = str(tmp_path / "nope.yaml")
    msg = _err(["-c", path])
    assert path in msg and "not found" in msg


def test_yaml_must_be_a_flat_mapping(tmp_path):
    assert "mapping" in _err(["-c", _yaml(tmp_path, "- lr\n- 0.1\n")])
    msg = _err(["-c", _yaml(tmp_path, "optimizer:\n  lr: 0.1\n")])
    assert "'optimizer'" in msg and "flat" in msg


def test_empty_yaml_is_all_defaults(tmp_path):
    args = config.parse_args(["-c", _yaml(tmp_path, "# nothing\n")])
    assert args.lr == config.get_defaults()["lr"]


# ----------------------------------------------------------------------------- spellings
@pytest.mark.parametrize("word,value", [
    ("true", True), ("false", False), ("yes", True), ("no", False), ("1", True), ("0", False),
    ("on", True), ("off", False), ("TRUE", True), ("Off", False), ("Yes", True), ("NO", False),
])
def test_bool_spellings_on_cli(word, value):
    args = config.parse_args(["--ema", word, "--shuffle", word])
    assert args.ema is value and args.shuffle is value


def test_bool_bare_flag_and_yaml_booleans(tmp_path):
    assert config.parse_args(["--clip_grad"]).clip_grad is True
    path = _yaml(tmp_path, "ema: yes\nshuffle: False\nval_while_train: on\ndrop_remainder: 0\n")
    args = config.parse_args(["-c", path])
    assert (args.ema, args.shuffle, args.val_while_train, args.drop_remainder) == \
        (True, False, True, False)


def test_list_values_on_cli():
    args = config.parse_args(["--scale", "0.08", "1.0", "--mean", "0.485", "0.456", "0.406",
                              "--std", "0.229", "0.224", "0.225",
                              "--multi_step_decay_milestones", "30", "60", "90",
                              "--color_jitter", "0.4", "0.4", "0.4", "--re_value", "random"])
    assert args.scale == [0.08, 1.0]
    assert args.mean == [0.485, 0.456, 0.406]
    assert args.multi_step_decay_milestones == [30, 60, 90]
    assert all(isinstance(m, int) for m in args.multi_step_decay_milestones)
    assert args.color_jitter == [0.4, 0.4, 0.4]
    assert args.re_value == "random"
    # one-token forms
    args = config.parse_args(["--scale", "0.2,1.0", "--ratio", "[0.5, 2.0]", "--color_jitter", "0.3"])
    assert args.scale == [0.2, 1.0] and args.ratio == [0.5, 2.0] and args.color_jitter == 0.3


def test_nullable_keys_take_none_on_cli(tmp_path):
    path = _yaml(tmp_path, "ckpt_path: a.ckpt\nauto_augment: randaug-m9-mstd0.5\n"
                           "num_classes: 10\nresume: auto\ncolor_jitter: 0.4\n")
    args = config.parse_args(["-c", path, "--ckpt_path", "None", "--auto_augment", "null",
                              "--num_classes", "NULL", "--resume", "none", "--color_jitter", "None"])
    assert (args.ckpt_path, args.auto_augment, args.num_classes, args.resume,
            args.color_jitter) == (None, None, None, None, None)
    args = config.parse_args(["--resume", "auto", "--ckpt_path", ""])
    assert args.resume == "auto" and args.ckpt_path is None
    assert "'batch_size'" in _err(["--batch_size", "None"])


# ----------------------------------------------------------------------------- MindCV keys
def test_mindcv_alias_keys_are_mapped(tmp_path):
    path = _yaml(tmp_path, "filter_bias_and_bn: True\ndynamic_loss_scale: True\n")
    args = config.parse_args(["-c", path])
    assert args.weight_decay_filter == "norm_and_bias" and args.loss_scale_type == "dynamic"
    # a newer key on the command line beats the older key in the file
    args = config.parse_args(["-c", path, "--weight_decay_filter", "disable"])
    assert args.weight_decay_filter == "disable"
    # both at the same level and disagreeing: an error naming both
    msg = _err(["--filter_bias_and_bn", "false", "--weight_decay_filter", "auto"])
    assert "filter_bias_and_bn" in msg and "weight_decay_filter" in msg


def test_no_effect_keys_warn_only_when_changed(tmp_path, capsys):
    config.parse_args(["-c", _yaml(tmp_path, "data_url: /cache/data/\nenable_modelarts: False\n")])
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    config.parse_args(["--data_url", "s3://bucket/imagenet", "--train_url", "s3://bucket/out"])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 2
    assert any("'data_url'" in ln for ln in lines)
    assert any("'train_url'" in ln for ln in lines)
    assert set(config.NO_EFFECT_KEYS) <= set(config.config_keys())
    assert all(isinstance(r, str) and r for r in config.NO_EFFECT_KEYS.values())


def test_parsing_prints_nothing_on_stdout(tmp_path, capsys):
    config.parse_args(["-c", os.path.join(RECIPE_DIR, "res2net_50_gpu.yaml"), "--dry_run"])
    out, err = capsys.readouterr()
    assert out == "" and err == ""


# ----------------------------------------------------------------------------- recipes
ALL_YAMLS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))


def test_expected_recipe_files_exist():
    names = {os.path.basename(p) for p in ALL_YAMLS}
    for size in ("50", "50_v1b", "101", "101_v1b"):
        for dev in ("ascend", "gpu"):
            assert f"res2net_{size}_{dev}.yaml" in names
    assert {"res2net_152_gpu.yaml", "res2net_152_v1b_gpu.yaml",
            "res2net_fashion_mnist_cpu.yaml"} <= names


@pytest.mark.parametrize("path", ALL_YAMLS, ids=[os.path.basename(p) for p in ALL_YAMLS])
def test_every_yaml_parses_without_warnings(path, capsys):
    args = config.parse_args(["-c", path])
    assert args.config == path
    out, err = capsys.readouterr()
    assert out == "" and err == ""


# name: (model, epochs, amp, mixup, scheduler, warmup, decay_epochs)
RECIPES = {
    "res2net_50_ascend": ("res2net50", 200, "O3", 0.0, "cosine_decay", 4, 196),
    "res2net_50_gpu": ("res2net50", 300, "O2", 0.2, "cosine_decay", 5, 295),
    "res2net_50_v1b_ascend": ("res2net50_v1b", 300, "O3", 0.2, "cosine_decay", 5, 295),
    "res2net_50_v1b_gpu": ("res2net50_v1b", 300, "O2", 0.2, "cosine_decay", 5, 295),
    "res2net_101_ascend": ("res2net101", 140, "O3", 0.0, "step_decay", 0, 30),
    "res2net_101_gpu": ("res2net101", 300, "O2", 0.2, "cosine_decay", 5, 295),
    "res2net_101_v1b_ascend": ("res2net101_v1b", 200, "O3", 0.0, "cosine_decay", 4, 196),
    "res2net_101_v1b_gpu": ("res2net101_v1b", 300, "O2", 0.2, "cosine_decay", 5, 295),
    "res2net_152_gpu": ("res2net152", 300, "O2", 0.2, "cosine_decay", 5, 295),
    "res2net_152_v1b_gpu": ("res2net152_v1b", 300, "O2", 0.2, "cosine_decay", 5, 295),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_published_recipe_values(name):
    model, epochs, amp, mixup, sched, warmup, decay = RECIPES[name]
    a = config.parse_args(["-c", os.path.join(RECIPE_DIR, name + ".yaml")])
    assert (a.model, a.epoch_size, a.amp_level, a.mixup, a.scheduler, a.warmup_epochs,
            a.decay_epochs) == (model, epochs, amp, mixup, sched, warmup, decay)
    # common part of every MindCV Res2Net recipe
    assert (a.opt, a.lr, a.momentum, a.weight_decay, a.weight_decay_filter) == \
        ("momentum", 0.1, 0.9, 1e-4, "disable")
    assert (a.label_smoothing, a.re_prob, a.color_jitter, a.hflip) == (0.1, 0.5, 0.4, 0.5)
    assert (a.scale, a.ratio, a.interpolation, a.crop_pct) == \
        ([0.08, 1.0], [0.75, 1.333], "bilinear", 0.875)
    assert (a.loss_scale, a.loss_scale_type, a.min_lr, a.val_interval, a.keep_checkpoint_max) == \
        (1024.0, "fixed", 0.0, 5, 10)
    assert (a.batch_size, a.num_classes, a.image_resize, a.loss) == (32, 1000, 224, "CE")
    if sched == "step_decay":
        assert a.decay_rate == 0.1
    else:
        assert a.warmup_epochs + a.decay_epochs == a.epoch_size


def test_152_recipes_differ_from_101_only_in_model():
    for v in ("", "_v1b"):
        a = vars(config.parse_args(["-c", os.path.join(RECIPE_DIR, f"res2net_101{v}_gpu.yaml")]))
        b = vars(config.parse_args(["-c", os.path.join(RECIPE_DIR, f"res2net_152{v}_gpu.yaml")]))
        diff = {k for k in a if a[k] != b[k]}
        assert diff == {"model", "config"}


def test_fashion_mnist_demo():
    """The demo recipe: a zoo Res2Net on the 28 px grey images, CPU, launchable by mpirun / msrun,
    a schedule that ends exactly at the last epoch, and validation at the end."""
    from mindcv_res2net import list_models
    a = config.parse_args(["-c", os.path.join(RECIPE_DIR, "res2net_fashion_mnist_cpu.yaml")])
    assert a.model in list_models() and (a.dataset, a.num_classes, a.in_channels) == ("fashion_mnist", 10, 3)
    assert (a.image_resize, a.crop_pct, a.device_target, a.amp_level) == (28, 1.0, "CPU", "O0")
    assert a.distribute == "auto"  # mpirun / msrun runs of the demo need no extra flag
    assert a.warmup_epochs + a.decay_epochs == a.epoch_size
    assert a.epoch_size % a.val_interval == 0 and a.val_while_train
    assert a.zero_init_last  # a stable start for a 50-layer net trained from scratch in minutes


def test_old_mindcv_v1b_recipe_runs_unchanged(tmp_path):
    # MindCV's earlier res2net_50_v1b_gpu.yaml carried filter_bias_and_bn: True
    text = open(os.path.join(RECIPE_DIR, "res2net_50_v1b_gpu.yaml")).read()
    text = text.replace('opt: "momentum"\n', 'opt: "momentum"\nfilter_bias_and_bn: True\n')
    a = config.parse_args(["-c", _yaml(tmp_path, text)])
    assert a.weight_decay_filter == "norm_and_bias"


# ----------------------------------------------------------------------------- dump / save
def test_dry_run_dump_round_trips(tmp_path):
    argv = ["-c", os.path.join(RECIPE_DIR, "res2net_101_ascend.yaml"), "--dry_run",
            "--lr", "0.05", "--mean", "0.5", "0.5", "0.5", "--std", "0.25", "0.25", "0.25",
            "--auto_augment", "randaug-m9-mstd0.5", "--color_jitter", "0.1", "0.2", "0.3"]
    args = config.parse_args(argv)
    assert args.dry_run is True
    text = config.dump_config(args)
    loaded = yaml.safe_load(text)
    assert "dry_run" not in loaded and "config" not in loaded
    for key, value in loaded.items():
        assert getattr(args, key) == value, key
    expected = set(config.config_keys()) - {"dry_run"} - set(config.ALIAS_KEYS)
    assert set(loaded) == expected
    # and the dump is a valid config file giving back the same values
    again = config.parse_args(["-c", _yaml(tmp_path, text, "dump.yaml")])
    for key in loaded:
        assert getattr(again, key) == getattr(args, key), key
    assert again.dry_run is False


def test_dump_accepts_tuples():
    args = config.parse_args([])
    args.scale = (0.1, 1.0)
    assert yaml.safe_load(config.dump_config(args))["scale"] == [0.1, 1.0]


def test_save_config_atomic(tmp_path, monkeypatch):
    args = config.parse_args(["--lr", "0.25"])
    path = tmp_path / "run" / "config.yaml"
    assert config.save_config(args, str(path)) == str(path)
    assert path.exists() and not os.path.exists(str(path) + ".tmp")
    assert yaml.safe_load(path.read_text())["lr"] == 0.25
    assert sorted(os.listdir(tmp_path / "run")) == ["config.yaml"]

    # a failure before the rename leaves the previous file whole and no .tmp behind
    def boom(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(config.os, "replace", boom)
    args.lr = 0.5
    with pytest.raises(UserError, match="disk full"):  # one clear message naming the file
        config.save_config(args, str(path))
    assert yaml.safe_load(path.read_text())["lr"] == 0.25
    assert sorted(os.listdir(tmp_path / "run")) == ["config.yaml"]
