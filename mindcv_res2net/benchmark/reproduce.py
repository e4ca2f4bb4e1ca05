"""``benchmark.py --reproduce``: MindCV's Res2Net table, from released checkpoints or from training runs.

    benchmark.py --reproduce --ckpt res2net50=PATH [--ckpt ROW=PATH ...] --data_dir DIR --out OUT
    benchmark.py --reproduce --data_dir DIR --out OUT [--rows a,b] [--devices N] [--set KEY=VALUE ...]
    benchmark.py --reproduce --from_runs OUT

Each row is done by the entry scripts themselves, in subprocesses (``train.py`` under ``mpirun -n N``
when N > 1, then ``validate.py``), so the table holds what a user's own commands give. A row's folder:

    OUT/<row>/train/           train.py's ckpt_save_dir: config.yaml, metrics.csv, checkpoints, logs
    OUT/<row>/validate.json    validate.py --json of the row's checkpoint (the best one after training)
    OUT/<row>/reproduce.json   how this command ran the row (recipe, devices, accumulation, --set, checkpoint)
    OUT/<row>/row.json         the row of the table, written last: the row is finished

Rerunning the command skips finished rows and continues an interrupted one (``train.py --resume
auto``). ``--from_runs OUT`` rebuilds the table from those files alone (runs trained elsewhere: copy
their ckpt_save_dir to ``OUT/<row>/train`` and write ``validate.json`` with validate.py --json).
Every number of the table comes from one of those files (see ``row_from_files``).
"""
import csv
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import yaml

from .. import __version__
from ..atomic_io import write_text_atomic
from ..errors import UserError
from .published import RECIPE_DEVICES, ROWS, published_row
from .reproduce_table import table_markdown

TRAIN_DIR, VALIDATE_JSON, SETTINGS_JSON, ROW_JSON = "train", "validate.json", "reproduce.json", "row.json"


# ---------------------------------------------------------------------------------------- settings
def row_settings(args, row):
    """What this command does for ``row``: the settings recorded in ``reproduce.json`` and compared on
    a rerun (a folder made with other settings is not continued)."""
    ckpt = args.ckpt_paths.get(row.row)
    accum = None
    if ckpt is None and "gradient_accumulation_steps" not in args.overrides:
        accum = RECIPE_DEVICES // args.devices  # the published global batch: 8 x batch_size
    return {"row": row.row, "model": row.model, "config": row.config(args.recipe),
            "mode": "checkpoint" if ckpt else "train", "devices": args.devices, "accumulation": accum,
            "overrides": dict(args.overrides), "ckpt": os.path.abspath(ckpt) if ckpt else None,
            "rehearsal": bool(args.overrides)}


def _key_args(overrides):
    out = []
    for key, value in overrides.items():
        out += [f"--{key}"] + (value.split() or [value])
    return out


# ---------------------------------------------------------------------------------------- commands
def _mpirun(devices):
    launcher = shutil.which("mpirun")
    if launcher is None:
        raise UserError(f"--devices {devices} runs train.py under mpirun, which is not on PATH: install OpenMPI "
                        "(apt-get install openmpi-bin libopenmpi-dev) or pass --devices 1.")
    cmd = [launcher, "-n", str(devices)]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    if devices > (os.cpu_count() or 1):
        cmd.append("--oversubscribe")
    return cmd


def _script_command(scripts_dir, script, settings, extra):
    devices = settings["devices"]
    cmd = [sys.executable, os.path.join(scripts_dir, script)] + extra
    cmd += ["--distribute", "True" if devices > 1 else "False"]
    return (_mpirun(devices) + cmd) if devices > 1 else cmd


def _run(cmd, what, row_dir):
    print(f"[reproduce] {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise UserError(f"{what} ended with status {proc.returncode} (its output is above; {row_dir} keeps what "
                        "was done). Fix the cause and run the same command again: finished rows are skipped and "
                        "an interrupted training run continues.")


def check_recipe(scripts_dir, settings, data_dir):
    """``train.py --dry_run`` (``validate.py`` for a checkpoint row) with the row's recipe and ``--set``
    keys: every key and value is checked by the script itself before any row runs; returns the
    resolved configuration."""
    script = "train.py" if settings["mode"] == "train" else "validate.py"
    cmd = [sys.executable, os.path.join(scripts_dir, script), "-c", os.path.join(scripts_dir, settings["config"]),
           "--data_dir", data_dir, "--dry_run"] + _key_args(settings["overrides"])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        message = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"status {proc.returncode}"
        raise UserError(f"row {settings['row']}: {script} refuses {settings['config']} with --set "
                        f"{_show_overrides(settings['overrides'])}: {message.removeprefix('error: ')}")
    return yaml.safe_load(proc.stdout) or {}


def _show_overrides(overrides):
    return " ".join(f"{k}={v}" for k, v in overrides.items()) or "(none)"


# ---------------------------------------------------------------------------------------- one row
def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _check_same_settings(row_dir, settings):
    recorded = _read_json(os.path.join(row_dir, SETTINGS_JSON))
    if recorded is None:
        return
    keep = ("config", "mode", "devices", "accumulation", "overrides", "ckpt")
    if {k: recorded.get(k) for k in keep} != {k: settings[k] for k in keep}:
        diff = [f"{k}: {recorded.get(k)!r} there, {settings[k]!r} now" for k in keep if recorded.get(k) != settings[k]]
        raise UserError(f"{row_dir} holds a run of row {settings['row']} made with other settings ({'; '.join(diff)}). "
                        "Pass another --out, or remove that folder to start the row again.")


def _train_finished(train_dir, epochs):
    rows = read_metrics(train_dir)
    return len(rows) >= epochs and all(r.get("epoch") for r in rows)


def best_checkpoint(train_dir, model):
    """The checkpoint a training row is validated with: ``<model>_best.ckpt`` (best top-1 of the
    validations during training), else the last epoch's."""
    best = os.path.join(train_dir, f"{model}_best.ckpt")
    if os.path.isfile(best):
        return best
    epochs = []
    for name in os.listdir(train_dir) if os.path.isdir(train_dir) else []:
        stem = name[len(model) + 1:-5] if name.startswith(model + "-") and name.endswith(".ckpt") else ""
        parts = stem.split("_")
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            epochs.append((int(parts[0]), int(parts[1]), name))
    if not epochs:
        raise UserError(f"{train_dir} holds no {model} checkpoint to validate: train the row (run the command "
                        "without --from_runs) or copy the run's ckpt_save_dir there.")
    return os.path.join(train_dir, max(epochs)[2])


def run_row(scripts_dir, settings, config, data_dir, out):
    """Train (or take the checkpoint of) one row and validate it; writes its files (see the module).
    ``config``: the row's resolved configuration (``check_recipe``)."""
    row_dir = os.path.join(out, settings["row"])
    os.makedirs(row_dir, exist_ok=True)
    _check_same_settings(row_dir, settings)
    write_text_atomic(os.path.join(row_dir, SETTINGS_JSON), json.dumps(settings, indent=2) + "\n", "settings")
    common = ["-c", os.path.join(scripts_dir, settings["config"]), "--data_dir", data_dir]
    common += _key_args(settings["overrides"])
    if settings["mode"] == "train":
        train_dir = os.path.join(row_dir, TRAIN_DIR)
        accum = ["--gradient_accumulation_steps", str(settings["accumulation"])] if settings["accumulation"] else []
        if not _train_finished(train_dir, int(config.get("epoch_size", 0))):
            _run(_script_command(scripts_dir, "train.py", settings,
                                 common + accum + ["--ckpt_save_dir", train_dir, "--resume", "auto"]),
                 f"train.py for row {settings['row']}", row_dir)
        ckpt = best_checkpoint(train_dir, settings["model"])
    else:
        ckpt = settings["ckpt"]
    _run(_script_command(scripts_dir, "validate.py", settings,
                         common + ["--ckpt_path", ckpt, "--json", os.path.join(row_dir, VALIDATE_JSON)]),
         f"validate.py for row {settings['row']}", row_dir)
    row = row_from_files(row_dir, settings["row"], ckpt=ckpt)
    write_text_atomic(os.path.join(row_dir, ROW_JSON), json.dumps(row, indent=2) + "\n", "table row")
    return row


# ---------------------------------------------------------------------------------------- the files -> a row
def read_metrics(train_dir):
    try:
        with open(os.path.join(train_dir, "metrics.csv"), newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def train_seconds_per_epoch(metrics):
    """The median ``epoch_time_s`` of the epochs after the first (which compiles the graph); None
    with fewer than two epochs."""
    times = [_number(r.get("epoch_time_s")) for r in metrics[1:]]
    times = [t for t in times if t is not None]
    return statistics.median(times) if times else None


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def count_parameters(model, num_classes):
    """The model's parameters with the BatchNorm moving statistics (MindCV's "Params" column)."""
    from ..models.factory import create_model  # pylint: disable=import-outside-toplevel

    net = create_model(model, num_classes=num_classes)
    return sum(int(p.size) for p in net.get_parameters())


def _context(device, ranks, mode, accumulation):
    text = f"{device}x{ranks}-{'G' if int(mode) == 0 else 'F'}"
    return text + (f", accum {accumulation}" if accumulation and int(accumulation) > 1 else "")


def _load_config(train_dir):
    try:
        with open(os.path.join(train_dir, "config.yaml"), encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return {}


def row_from_files(row_dir, name, ckpt=None):
    """The table row of ``row_dir`` from its files alone (see the module docstring)."""
    validation = _read_json(os.path.join(row_dir, VALIDATE_JSON))
    if validation is None:
        raise UserError(f"{os.path.join(row_dir, VALIDATE_JSON)} is missing or damaged: validate the row's "
                        f"checkpoint with validate.py --json {os.path.join(row_dir, VALIDATE_JSON)}.")
    settings = _read_json(os.path.join(row_dir, SETTINGS_JSON)) or {}
    published = published_row(name)
    train_dir = os.path.join(row_dir, TRAIN_DIR)
    metrics, config = read_metrics(train_dir), _load_config(train_dir)
    model = validation.get("model") or published.model
    ckpt = ckpt or validation.get("ckpt_path") or settings.get("ckpt")
    if metrics:  # a training row: the run's shape from its own files
        context = _context(config.get("device_target", "?"), int(_number(metrics[-1].get("ranks")) or 1),
                           config.get("mode", 0), config.get("gradient_accumulation_steps", 1))
    else:
        context = _context(validation.get("device_target", "?"), validation.get("ranks", 1),
                           validation.get("mode", 0), None)
    num_classes = int(validation.get("num_classes") or config.get("num_classes") or 1000)
    params = count_parameters(model, num_classes)
    notes = list(published.notes)
    if num_classes != 1000:
        notes.append(f"{name}: params of its {num_classes}-class model; the published column counts the 1000-class "
                     f"classifier ({published.params_m.value} M)")
    return {
        "row": name, "model": model, "config": settings.get("config") or published.config("gpu"),
        "context": context,
        "top1": 100.0 * validation["top1"], "top5": 100.0 * validation["top5"],
        "params_m": params / 1e6, "params": params,
        "train_s_per_epoch": train_seconds_per_epoch(metrics) if metrics else None,
        "infer_ms_per_step": validation.get("ms_per_step"),
        "infer_batch_size": validation.get("batch_size"),
        "ckpt": ckpt, "ckpt_sha256": sha256_of(ckpt) if ckpt and os.path.isfile(ckpt) else None,
        "published": published.as_json(),
        "rehearsal": bool(settings.get("rehearsal", False)),
        "notes": notes,
    }


# ---------------------------------------------------------------------------------------- the table
def _commit(scripts_dir):
    try:
        proc = subprocess.run(["git", "-C", scripts_dir, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=False, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def write_table(out, rows, scripts_dir, command):
    import mindspore  # pylint: disable=import-outside-toplevel

    report = {"rows": rows, "mindspore": mindspore.__version__, "mindcv_res2net": __version__,
              "commit": _commit(scripts_dir), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command}
    write_text_atomic(os.path.join(out, "table.json"), json.dumps(report, indent=2) + "\n", "table")
    text = table_markdown(report)
    write_text_atomic(os.path.join(out, "table.md"), text, "table")
    print(text, end="")
    return report


def finished_rows(out):
    """The rows of ``out`` in the published table's order: folders with a ``validate.json``."""
    found = [r.row for r in ROWS if os.path.isfile(os.path.join(out, r.row, VALIDATE_JSON))]
    if not found:
        raise UserError(f"--from_runs {out}: no row folder with a {VALIDATE_JSON} (expected "
                        f"{out}/<row>/{VALIDATE_JSON}, rows: {', '.join(r.row for r in ROWS)}).")
    return found


def run_reproduce(args, scripts_dir):
    """The whole command; returns the table's JSON report."""
    if args.from_runs:
        out = args.from_runs
        rows = [row_from_files(os.path.join(out, name), name) for name in finished_rows(out)]
        return write_table(out, rows, scripts_dir, args.command)
    plans = []
    for name in args.row_names:  # every row's settings and recipe checked before the first one runs
        settings = row_settings(args, published_row(name))
        _check_same_settings(os.path.join(args.out, name), settings)
        plans.append((settings, check_recipe(scripts_dir, settings, args.data_dir)))
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for settings, config in plans:
        row_dir = os.path.join(args.out, settings["row"])
        done = _read_json(os.path.join(row_dir, ROW_JSON))
        if done is not None:
            print(f"[reproduce] row {settings['row']}: finished earlier ({os.path.join(row_dir, ROW_JSON)}), "
                  "skipped", flush=True)
            rows.append(done)
            continue
        rows.append(run_row(scripts_dir, settings, config, args.data_dir, args.out))
    return write_table(args.out, rows, scripts_dir, args.command)
