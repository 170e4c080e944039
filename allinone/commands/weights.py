"""``python main.py weights``: each default model's state, address and path; --download fetches what is missing."""
from __future__ import annotations

import os
import sys
from typing import Sequence

from allinone.commands.args import Parser
from allinone.errors import print_error, reports_user_errors
from allinone.io.weights import (ENV_VAR, MissingWeights, ModelSpec, checkpoints_dir, default_models, resolve_all,
                                 weight_status)


@reports_user_errors
def weights_command(argv: Sequence[str] | None = None, *, specs: Sequence[ModelSpec] | None = None) -> int:
    """``python main.py weights [--checkpoints DIR] [--download]``: list every model as verified / present /
    missing / corrupt with its URL and target; --download fetches the missing ones.
    Exit 0 when every model is usable, 1 when some are missing or corrupt, 2 when a download failed."""
    parser = Parser(
        prog="python main.py weights",
        description="List the model weights allinone uses, where they go and whether they are there; "
                    "--download fetches the missing ones.")
    parser.add_argument("--checkpoints", default=None, metavar="DIR",
                        help=f"the checkpoints folder (default: ${ENV_VAR}, else checkpoints/ beside the package)")
    parser.add_argument("--download", action="store_true", help="download the missing models")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    catalog = tuple(default_models() if specs is None else specs)
    root = checkpoints_dir(args.checkpoints)
    failure: MissingWeights | None = None
    statuses = [weight_status(s, root) for s in catalog]
    wanted = [st.spec for st in statuses if st.state == "missing"]
    if args.download and wanted:
        try:
            resolve_all([s.key for s in wanted], root, progress=not args.quiet, specs=wanted)
        except MissingWeights as exc:
            failure = exc
        statuses = [weight_status(s, root) for s in catalog]
    pad = " " * 20
    print(f"checkpoints folder: {root}")
    for st in statuses:
        print(f"{st.spec.key:<9} {st.state:<9} {st.path}{os.sep if st.spec.is_folder else ''}")
        print(f"{pad}{st.spec.description}")
        print(f"{pad}url: {st.spec.url}")
        print(f"{pad}licence: {st.spec.licence}")
        if st.detail:
            print(f"{pad}{st.detail}")
    if failure is not None:
        print_error(failure)
        return 2
    if any(st.state in ("missing", "corrupt") for st in statuses):
        if not args.download and any(st.state == "missing" for st in statuses):
            print("run `python main.py weights --download` to fetch the missing models")
        return 1
    return 0
