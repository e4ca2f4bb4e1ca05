"""MindCV's published Res2Net table (D910x8-G), the figures ``benchmark.py --reproduce`` compares with.

One ``PublishedRow`` per row, each figure with its source. MindCV measured on 8 Ascend 910s in graph
mode, batch 32 per device (global batch 256); "Params (M)" counts the BatchNorm moving statistics too.
"""
from dataclasses import dataclass, field

MINDCV_TABLE = "MindCV configs/res2net/README.md, Res2Net table (D910x8-G)"
RERELEASE = "MindCV's re-released checkpoint res2net101_v1b-7e6db001.ckpt (its model-zoo entry)"
RECIPE_DEVICES = 8  # the published recipes' devices: global batch 8 x batch_size


@dataclass(frozen=True)
class Figure:
    """A published number and where it is published; ``also``: other published values of it."""
    value: float
    source: str = MINDCV_TABLE
    also: tuple = ()

    def as_json(self):
        out = {"value": self.value, "source": self.source}
        if self.also:
            out["also"] = [{"value": f.value, "source": f.source} for f in self.also]
        return out


@dataclass(frozen=True)
class PublishedRow:
    row: str
    model: str
    recipe: str  # configs/res2net/<recipe>_<gpu|ascend>.yaml
    top1: Figure
    top5: Figure
    params_m: Figure
    train_s_per_epoch: Figure
    infer_ms_per_step: Figure
    notes: tuple = field(default=())

    def config(self, device):
        """The recipe file for ``device`` ("gpu" or "ascend"), relative to the repository."""
        return f"configs/res2net/{self.recipe}_{device}.yaml"

    def as_json(self):
        return {name: getattr(self, name).as_json()
                for name in ("top1", "top5", "params_m", "train_s_per_epoch", "infer_ms_per_step")}


PARAMS_NOTE_V1B = ("res2net50_v1b: MindCV prints 25.77 M, while its parameters with the BatchNorm moving "
                   "statistics count 25,777,972, which rounds to 25.78 M (res2net50 25,758,612, res2net101 "
                   "45,325,748 and res2net101_v1b 45,345,108 round to the published figures)")

ROWS = (
    PublishedRow("res2net50", "res2net50", "res2net_50", Figure(79.35), Figure(94.64), Figure(25.76),
                 Figure(246.0), Figure(28.5)),
    PublishedRow("res2net101", "res2net101", "res2net_101", Figure(79.56), Figure(94.70), Figure(45.33),
                 Figure(467.0), Figure(46.0)),
    PublishedRow("res2net50_v1b", "res2net50_v1b", "res2net_50_v1b", Figure(80.32), Figure(95.09), Figure(25.77),
                 Figure(250.0), Figure(29.6), notes=(PARAMS_NOTE_V1B,)),
    PublishedRow("res2net101_v1b", "res2net101_v1b", "res2net_101_v1b",
                 Figure(81.26, also=(Figure(81.14, RERELEASE),)), Figure(95.41, also=(Figure(95.41, RERELEASE),)),
                 Figure(45.35), Figure(435.0), Figure(42.4)),
)
ROW_NAMES = tuple(r.row for r in ROWS)


def published_row(name):
    for row in ROWS:
        if row.row == name:
            return row
    return None
