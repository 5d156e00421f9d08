"""One module per ``blina`` command (see blina_study.adapter.cli)."""
