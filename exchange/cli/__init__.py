"""The `exchange` command line (entry point: ``exchange.cli.main:main``)."""
