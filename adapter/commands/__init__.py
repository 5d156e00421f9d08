"""One module per ``blina`` command (see adapter.cli)."""
