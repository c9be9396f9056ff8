"""``python -m dispatchd``: the same as the ``dispatchd`` command."""

from dispatchd.cli import main

raise SystemExit(main())
