"""allinone: python main.py --gallery g.mp4 --probe p.mp4 [--probe p2.mp4 ...] (see --help)."""
import sys

from allinone.cli import main

if __name__ == "__main__":
    sys.exit(main())
