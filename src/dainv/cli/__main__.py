"""``python -m dainv.cli``: the same as ``dainv``."""

from dainv.cli import main

raise SystemExit(main())
