"""The ``semiseg`` command line: thin wrappers around the Python API, one module per pipeline side
(``data``: check, plan, preprocess, evaluate; ``train``: train, selftrain, fit, demo; ``apply``:
predict, pseudolabel, propagate; ``annotate``: the browser annotation server; ``deploy``: export, report).

Exit codes: 0 success; 1 ``check`` found errors in the dataset; 2 bad input or options (the
message names the file and the problem); 130 interrupted.
"""
from __future__ import annotations

import argparse
import errno
import signal
import sys

from .. import __version__
from ..training import distributed
from ..utils import SemisegError
from . import annotate, apply, data, deploy, train

FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="semiseg", description="Semi-supervised 3D medical image segmentation "
                                 "on nnU-Net v2 raw datasets.")
    ap.add_argument("--version", action="version", version=f"semiseg {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(name, help_, fn, workers_help="worker processes (default: all cores)"):
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(fn=fn)
        p.add_argument("--workers", type=int, default=None, help=workers_help)
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        return p

    for module in (data, train, apply, annotate, deploy):
        module.register(add)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit: an error to report, not a silent kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    finished = False
    try:
        rc = a.fn(a)
        finished = True
        return rc
    except SemisegError as e:
        print(f"semiseg {a.cmd}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in FULL:
            raise
        print(f"semiseg {a.cmd}: error: {e.filename or 'a file'}: {e.strerror}: the disk (or a quota, or a file-size "
              "limit) is full; nothing was left half-written: free space and run the same command again",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"semiseg {a.cmd}: interrupted", file=sys.stderr)
        return 130
    finally:
        distributed.teardown(finished)  # a command run under torchrun: its process group ends with it


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
