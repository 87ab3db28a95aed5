"""The one base class of user errors.

Anything the user can fix (a params key, a dataset folder, a checkpoint file, an output
path) raises a subclass of ``UserError`` whose message names the key, file or path.
Every entry point (``deepfake-detect`` and each ``stages/*.py``) turns it into one line on
stderr and exit code 2; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem the user can fix; the message names the key, file or path at fault."""


def run_main(main, argv=None, prog: str = "deepfake-detect") -> int:
    """Call ``main(argv)``; a user error becomes one line on stderr and exit code 2."""
    import sys

    try:
        main(argv)
    except (UserError, FileNotFoundError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


def one_line(e: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line (torch's messages span several), cut at ``limit`` characters."""
    return " ".join(f"{type(e).__name__}: {e}".split())[:limit]
