"""Look at what a model sees, in the browser (docs/method.md §9).

    dermo view --run runs/NAME [--eval runs/NAME/eval-val] [--port 8765]
    dermo view --models a.keras b.keras runs/c [--weights 1 1 2]   # an ensemble
    dermo view --run runs/cv                  # a folder of run folders: one member per run

Serves a page on http://127.0.0.1:PORT/ (only this machine, unless --host) where images dropped or chosen
show, per model: the original, the preprocessed image the model saw, the lesion mask's contour, every
class's probability and CAM (opacity slider) and the lesion focus. With --eval (dermo evaluate's output folder;
alone, its run is the folder above it) the page also lists predictions.csv, sortable and filterable, each row
opening the same view. Uploads over --max-upload-mb, files that are not images, truncated files and images
of too many pixels are refused with one line in the page. Ctrl-C (or --stop-after) stops the server.
"""
from __future__ import annotations

import argparse
import errno
import sys
import threading
from pathlib import Path

from dermo.console import parser
from dermo.errors import run_cli

PROG = "dermo view"


def parse_args(argv=None, prog: str = PROG) -> argparse.Namespace:
    p = parser(prog, __doc__)
    p.add_argument("--run", nargs="+", default=[], help="run folder(s) written by dermo train, or a folder of run "
                                                        "folders (every run in it is a member; default: none)")
    p.add_argument("--models", nargs="+", default=[], help="model files (.keras/.h5) and/or run folders: an "
                                                           "ensemble, soft-voted as dermo ensemble does "
                                                           "(default: none)")
    p.add_argument("--weights", nargs="+", type=float, help="one soft-vote weight per model (default: equal)")
    p.add_argument("--task", choices=["binary", "multiclass", "auto"], default="auto",
                   help="class names of model files saved without dermo's contract")
    p.add_argument("--eval", help="an evaluation folder (predictions.csv) to browse, e.g. runs/NAME/eval-val "
                                  "(default: none)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload in MB")
    p.add_argument("--stop-after", type=float, metavar="SECONDS",
                   help="stop serving after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--cache-dir", help="preprocessing cache for evaluation rows (default: the run's, "
                                       "$DERMO_CACHE or ~/.cache/dermo)")
    args = p.parse_args(argv)
    if not args.run and not args.models:
        above = Path(args.eval).parent if args.eval else None
        if above is None or not (above / "config.json").is_file():
            p.error("give --run RUN or --models FILE ... (or --eval RUN/eval-<split> inside a run folder)")
        args.run = [str(above)]
    if args.max_upload_mb <= 0:
        p.error("--max-upload-mb must be positive")
    if args.stop_after is not None and args.stop_after <= 0:
        p.error("--stop-after must be positive")
    if not 0 <= args.port <= 65535:
        p.error("--port must be between 0 and 65535")
    return args


def build_viewer(args):
    """The Viewer of the parsed options (models loaded, evaluation folder read)."""
    from dermo.viewer.app import MB, Viewer
    from dermo.viewer.evalset import EvalSet
    from dermo.viewer.members import Members

    evalset = EvalSet.load(args.eval) if args.eval else None          # before the models: a bad folder fails fast
    members = Members.load(args.run + args.models, args.task, args.weights, args.cache_dir)
    if evalset is not None:
        evalset.check(members.classes)
        evalset.note_stale([s.model_path for s in members.sources])
    members.warm_up()
    return Viewer(members, evalset, int(args.max_upload_mb * MB))


def bind(host: str, port: int):
    """The server, bound before the models load: a port in use or a host that cannot be listened on is one
    line at once."""
    from dermo.viewer.problems import ViewerError
    from dermo.viewer.server import make_server

    try:
        return make_server(None, host, port)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ViewerError(f"--port {port}: already in use (another viewer?); pass another --port, or "
                              "--port 0 for any free one") from None
        raise ViewerError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None


def serve(server, stop_after: float | None) -> str:
    """Serve until Ctrl-C, or for `stop_after` seconds; says how it stopped."""
    if stop_after:
        timer = threading.Timer(stop_after, server.shutdown)
        timer.daemon = True
        timer.start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        return "stopped"
    return f"stopped after {stop_after:g} s (--stop-after)"


def main(argv=None, prog: str = PROG) -> int:
    args = parse_args(argv, prog)

    def body() -> int:
        from dermo.viewer.server import url_of

        server = bind(args.host, args.port)
        try:
            server.viewer = viewer = build_viewer(args)
            members = ", ".join(viewer.members.names)
            print(f"{prog}: {members} ({', '.join(viewer.members.classes)}); open {url_of(server)} "
                  "(Ctrl-C stops it)", flush=True)
            print(f"{prog}: {serve(server, args.stop_after)}", file=sys.stderr)
        finally:
            server.server_close()
        return 0

    return run_cli(body, prog)
