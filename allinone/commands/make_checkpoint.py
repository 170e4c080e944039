"""python main.py make-test-checkpoint [FILE]: a randomly initialised GaitBase saved in OpenGait's checkpoint format.

For trying the pipeline end to end where no trained checkpoint is at hand (the README's sample command uses one):
it loads, runs and costs exactly what a trained GaitBase does, but its embeddings carry no identity, so its matches
mean nothing. The weights are seeded (--seed), so the same command gives the same file.
"""
from __future__ import annotations

import os
from pathlib import Path

from allinone.commands.args import Parser
from allinone.io.run_folder import temp_beside
from allinone.errors import print_error

DEFAULT = Path("GaitBase_random.pt")


def make_checkpoint_command(argv: list[str] | None = None) -> int:
    p = Parser(prog="python main.py make-test-checkpoint", description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", type=Path, default=DEFAULT, metavar="FILE",
                   help=f"where to write it (default: {DEFAULT})")
    p.add_argument("--seed", type=int, default=0, help="torch seed of the random weights (default 0)")
    p.add_argument("--classes", type=int, default=200, metavar="N",
                   help="training identities of the classifier head (the embedding does not depend on it; "
                        "default 200)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.add_argument("--quiet", action="store_true", help="accepted for symmetry with the other commands")
    args = p.parse_args(argv)
    out: Path = args.out
    if out.suffix != ".pt":
        print_error(f"{out}: a checkpoint file name ends in .pt")
        return 2
    if out.exists() and not args.force:
        print(f"{out} exists already, left as it is (--force writes it again)")
        return 0
    if args.classes < 1:
        print_error(f"--classes must be at least 1, got {args.classes}")
        return 2
    if not out.parent.is_dir():
        print_error(f"{out.parent}: no such folder")
        return 2
    import torch

    from allinone.gait.checkpoint import save_gaitbase_checkpoint
    from allinone.gait.gaitbase import GaitBase
    torch.manual_seed(args.seed)
    tmp = temp_beside(out)
    try:
        save_gaitbase_checkpoint(GaitBase(class_num=args.classes), tmp)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        print_error(f"{out}: cannot write it ({exc.strerror or exc})")
        return 2
    print(f"{out}: a randomly initialised GaitBase in OpenGait's checkpoint format (seed {args.seed}); "
          "its matches mean nothing, use it to try the pipeline")
    return 0
