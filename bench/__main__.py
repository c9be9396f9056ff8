"""``python -m bench [OPTIONS]`` is ``dispatchd bench [OPTIONS]``."""

import sys

from dispatchd.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
