"""``table.md`` of ``benchmark.py --reproduce``: each row of ours beside MindCV's published row."""
from .published import MINDCV_TABLE

COLUMNS = (("top1", "Top-1 (%)", 2), ("top5", "Top-5 (%)", 2), ("params_m", "Params (M)", 2),
           ("train_s_per_epoch", "Train (s/epoch)", 1), ("infer_ms_per_step", "Infer (ms/step)", 1))


def _fmt(value, digits):
    return "-" if value is None else f"{value:.{digits}f}"


def _delta(ours, published, digits):
    if ours is None or published is None:
        return "-"
    return f"{ours - published:+.{digits}f}"


def _cell(row, key, digits):
    figure = row["published"][key]
    published = [figure["value"]] + [f["value"] for f in figure.get("also", []) if f["value"] != figure["value"]]
    ours = row.get(key)
    shown = " / ".join(_fmt(p, digits) for p in published)
    return f"{_fmt(ours, digits)} vs {shown} ({_delta(ours, figure['value'], digits)})"


def _row_line(row):
    label = row["row"] + (" (rehearsal)" if row.get("rehearsal") else "")
    cells = [label, row["context"]] + [_cell(row, key, digits) for key, _, digits in COLUMNS]
    return "| " + " | ".join(cells) + " |"


def _notes(rows):
    notes = []
    for row in rows:
        for note in row.get("notes", []):
            if note not in notes:
                notes.append(note)
        for key, figure in row["published"].items():
            for other in figure.get("also", []):
                note = (f"{row['row']} {key}: {figure['value']} in {figure['source']}; {other['value']} in "
                        f"{other['source']}")
                if other["value"] != figure["value"] and note not in notes:
                    notes.append(note)
    return notes


def table_markdown(report):
    """The markdown text of ``table.md`` for the report of ``reproduce.write_table``."""
    rows = report["rows"]
    lines = ["# Res2Net: our runs beside MindCV's published table", "",
             f"Published: {MINDCV_TABLE}. Each cell: ours vs published (ours - published). Context: device x "
             "ranks - G (graph mode) / F (PyNative); accum k: gradient accumulation keeping the published "
             "global batch (8 x batch_size). Train: median s per epoch after the first; infer: median ms per "
             "validation step after the first, at the recipe's batch size, per device.", ""]
    if any(r.get("rehearsal") for r in rows):
        lines += ["**Rehearsal rows** (run with `--set`: a scaled-down recipe, other data or settings) check the "
                  "pipeline; their figures are not comparable to the published row.", ""]
    lines.append("| Row | Context | " + " | ".join(title for _, title, _ in COLUMNS) + " |")
    lines.append("|" + "---|" * (2 + len(COLUMNS)))
    lines += [_row_line(r) for r in rows]
    notes = _notes(rows)
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    lines += ["", f"mindcv_res2net {report['mindcv_res2net']}, MindSpore {report['mindspore']}, commit "
                  f"{report.get('commit') or 'unknown'}, {report['date']}.", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)
