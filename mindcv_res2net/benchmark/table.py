"""``--table``: one row per registered model (aliases excluded), computed from the models
themselves: parameters, MACs at 224 px, and the published accuracy of the released weights."""
import mindspore as ms

from ..models.flops import count_macs
from ..models.factory import create_model
from ..models.layers import count_params
from ..weights.pretrained import get_pretrained_cfg
from ..models.registry import get_model_cfg, list_models, resolve_name
from .common import environment, no_init_parameters
from .settings import command


def _published(name):
    """((official top1, top5) or None, (MindCV top1, top5) or None) from the pretrained registry."""
    try:
        sources = get_pretrained_cfg(name)["sources"]
    except KeyError:  # no weights published for this model
        return None, None

    def pick(*tags):
        for tag in tags:
            s = sources.get(tag)
            if s and s.get("top1") is not None:
                return s["top1"], s.get("top5")
        return None

    return pick("official", "timm", "timm_legacy"), pick("mindcv")


def _dla_unused_project_macs(net, size=224):
    """MACs of the official DLA files' ``project`` convs that timm (and we) leave out.

    In the official release every tree whose channels change has a ``project`` (1x1 conv + BN)
    applied to its down-sampled input; only level-1 trees use the result, but the forward pass
    computes it in the deeper trees too. The models here have timm's structure (no such convs),
    so this is what a profiler of the official model counts on top of ``count_macs``.
    """
    def first_block(tree):
        while tree.levels > 1:
            tree = tree.tree1
        return tree.tree1

    def last_root(tree):
        while tree.levels > 1:
            tree = tree.tree2
        return tree.root

    total = 0

    def walk(tree, side):
        nonlocal total
        if tree.levels == 1:
            return
        in_ch, out_ch = first_block(tree).conv1.in_channels, last_root(tree).conv.out_channels
        if in_ch != out_ch:
            total += side * side * in_ch * out_ch
        walk(tree.tree1, side)
        walk(tree.tree2, side)

    for level in range(2, 6):
        walk(getattr(net, f"level{level}"), size // 2 ** level)
    return total


def build_table(log=None):
    """One row per registered model (aliases excluded), computed from the models themselves."""
    aliases = {}
    for alias in sorted(set(list_models()) - set(list_models(include_aliases=False))):
        aliases.setdefault(resolve_name(alias), []).append(alias)
    names = list_models(include_aliases=False, sort=False)  # registration order: families together
    rows = []
    for name in names:
        with no_init_parameters():  # the table needs shapes, not weight values
            net = create_model(name, num_classes=1000)
        official, mindcv = _published(name)
        row = {
            "model": name, "aliases": aliases.get(name, []),
            "params": count_params(net, trainable_only=True), "params_with_bn_stats": count_params(net, False),
            "macs_224": count_macs(net, (3, 224, 224)),
            "official_top1_top5": official, "mindcv_top1_top5": mindcv,
        }
        if get_model_cfg(name).family == "res2net_dla":
            row["macs_224_with_unused_project"] = row["macs_224"] + _dla_unused_project_macs(net)
        rows.append(row)
        if log:
            log(f"  {name}: done")
        del net
    return rows


def table_markdown(rows):
    """The rows as the README's markdown table, with its footnotes."""
    def acc(pair):
        return "-" if not pair else f"{pair[0]:.2f} / {pair[1]:.2f}"

    lines = ["| model (timm alias) | params (M) | with BN moving stats (M) | MACs at 224 px (G) | "
             "official top-1 / top-5 | MindCV top-1 / top-5 |", "|---|---|---|---|---|---|"]
    for r in rows:
        name = f"`{r['model']}`" + (f" (`{'`, `'.join(r['aliases'])}`)" if r["aliases"] else "")
        macs = f"{r['macs_224'] / 1e9:.3f}"
        if "macs_224_with_unused_project" in r:
            macs += f" ({r['macs_224_with_unused_project'] / 1e9:.3f}*)"
        lines.append(f"| {name} | {r['params'] / 1e6:.2f} | {r['params_with_bn_stats'] / 1e6:.2f} | {macs} | "
                     f"{acc(r['official_top1_top5'])} | {acc(r['mindcv_top1_top5'])} |")
    lines.append("")
    lines.append("Params: learnable parameters at 1000 classes; with BN moving stats = MindCV's \"Params\" column. "
                 "MACs: convolutions + classifier, one 224x224 image (`mindcv_res2net.models.flops.count_macs`). "
                 "Top-1 / top-5: published ImageNet-1k val accuracy of the released weights (`-`: none published).")
    if any("macs_224_with_unused_project" in r for r in rows):
        lines.append("\\* DLA-60: the models have timm's structure; in brackets the count with the official "
                     "release's unused `project` 1x1 convs added, which its forward pass computes and discards "
                     "(the official paper reports 4.2 G / 3.6 G).")
    return "\n".join(lines)


def run_table(args):
    """Print the table of every model and return the JSON report."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rows = build_table()
    print(table_markdown(rows))
    return {"benchmark": "mindcv_res2net", "task": "table", "rows": rows,
            "environment": environment(args), "command": command(args)}
