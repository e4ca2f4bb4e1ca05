"""What benchmark.py's reports record about a run, shared by the command line and the runners
(no MindSpore needed)."""

# train task: (lr, weight decay) of each optimizer, for every implementation alike
OPTIMIZER_SETTINGS = {"momentum": (0.01, 1e-4), "adam": (1e-3, 1e-4), "adamw": (1e-3, 0.05)}


def command(args):
    """The command line of this run, as the reports record it."""
    return "python benchmark.py " + " ".join(args.argv)
