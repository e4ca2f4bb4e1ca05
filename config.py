"""Configuration for train.py and validate.py: argparse with YAML defaults.

    import config
    args = config.parse_args(["-c", "configs/res2net/res2net_50_gpu.yaml", "--batch_size", "64"])
    print(config.dump_config(args))

Precedence: built-in defaults < the YAML file (``-c FILE``) < the command line; MindCV key names.
The code lives in the package, ``mindcv_res2net.cli.config`` (the key table in
``mindcv_res2net.cli.keys``), so that the installed package works from any directory; this
file is that module under its documented name: ``import config`` gives
``mindcv_res2net.cli.config`` itself (``parse_args``, ``get_defaults``, ``config_keys``,
``dump_config``, ``save_config``, ``NO_EFFECT_KEYS``, ``ALIAS_KEYS``, ``SCRIPTS``).
"""
import sys

from mindcv_res2net.cli import config as _config

sys.modules[__name__] = _config
