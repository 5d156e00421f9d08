"""``python -m blina_study``: the ``blina`` command line."""

from blina_study.adapter.cli import main

raise SystemExit(main())
