"""``python -m edgeloop``: the same CLI as the ``edgeloop`` entry point."""

from edgeloop.cli import main

raise SystemExit(main())
