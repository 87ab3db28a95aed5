"""DVC stage frame-faces (real pipeline): every image of a folder with sources.csv cut to its largest face, framed
one way, in the same layout with its own sources.csv (sources.py); optionally a second layout without some sources
in train and val (the leave-out run).

    python stages/frame_faces.py SRC DST [--size 224] [--margin 0.35] [--exclude sdfd --exclude sdxl ...]
        [--train-also FOLDER ...]
"""
import sys

from deepfake_detect.config import stage_parser
from deepfake_detect.crop import MARGIN, SIZE
from deepfake_detect.errors import run_main
from deepfake_detect.frame_faces import frame_sourced


def main(argv=None):
    ap = stage_parser(__doc__)
    ap.add_argument("src", help="a folder in the course layout with sources.csv")
    ap.add_argument("dst", help="the output folder: DST/<SRC's name>, DST/<SRC's name>_leaveout (with --exclude), "
                                "DST/frame_faces.json")
    ap.add_argument("--size", type=int, default=224,
                    help=f"crop size in px, {SIZE.range_text()} (default: %(default)s)")
    ap.add_argument("--margin", type=float, default=0.35,
                    help=f"crop side = (1 + margin) x the face box, {MARGIN.range_text()} (default: %(default)s)")
    ap.add_argument("--exclude", action="append", default=[],
                    help="a source left out of the train and val splits of DST/<SRC's name>_leaveout")
    ap.add_argument("--train-also", action="append", default=[], metavar="FOLDER",
                    help="a course-layout folder whose train split is framed the same way and added to DST's train")
    args = ap.parse_args(argv)
    frame_sourced(args.src, args.dst, args.size, args.margin, args.exclude, train_also=args.train_also)


if __name__ == "__main__":
    sys.exit(run_main(main))
