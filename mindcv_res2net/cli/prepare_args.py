"""The command line of ``python -m mindcv_res2net.data.prepare``: Fashion-MNIST / MNIST as PNG class
folders (:func:`mindcv_res2net.data.preparation.prepare`), and ``prepare mindrecord``: MindRecord copies
of an ImageFolder tree (:func:`mindcv_res2net.data.readers.mindrecord_writer.prepare_mindrecord`)."""
import sys

from ..data.preparation import prepare
from ..data.readers.mindrecord_writer import prepare_mindrecord
from ..data.readers.mnist_files import DATASETS
from .options import BoolFlag, Parser, add_debug


def mindrecord_main(argv):
    parser = Parser(prog="python -m mindcv_res2net.data.prepare mindrecord",
                                     description="Write MindRecord copies of an ImageFolder tree: one set of "
                                                 "shards per split folder, OUT/<split>/data.mindrecord*.")
    parser.add_argument("--src", required=True, help="ImageFolder root (SRC/<split>/<class>/<image>)")
    parser.add_argument("--out", required=True, help="output folder (gets one folder per split)")
    parser.add_argument("--shards", type=int, default=1, help="MindRecord files per split (default 1)")
    parser.add_argument("--splits", default=None,
                        help="comma-separated split folders (default: every folder of SRC holding class folders)")
    parser.add_argument("--class_list", default=None, help="text file of class names, one per line, in label order")
    parser.add_argument("--overwrite", action=BoolFlag, help="replace existing sets in --out")
    add_debug(parser)
    args = parser.parse_args(argv)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()] if args.splits else None
    prepare_mindrecord(args.src, args.out, shards=args.shards, splits=splits, overwrite=args.overwrite,
                       class_list=args.class_list)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "mindrecord":
        return mindrecord_main(argv[1:])
    parser = Parser(prog="python -m mindcv_res2net.data.prepare",
                                     description="Write Fashion-MNIST / MNIST as PNG class folders "
                                                 "('prepare mindrecord --help': MindRecord copies of an "
                                                 "ImageFolder tree).")
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--out", required=True, help="output folder (gets train/ and val/)")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N images per split")
    parser.add_argument("--source", default=None, help="folder with the four official .gz files")
    parser.add_argument("--workers", type=int, default=2, help="writer processes (default 2)")
    parser.add_argument("--no-verify", action="store_true", help="skip the hash check of local files")
    add_debug(parser)
    args = parser.parse_args(argv)
    prepare(args.dataset, args.out, limit=args.limit, source=args.source, workers=max(1, args.workers),
            verify=not args.no_verify)
    return 0
