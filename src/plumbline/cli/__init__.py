"""Layer 6: the ``plumbline`` command, a table of subcommands (:mod:`plumbline.cli.main`), one
module per group of commands."""
