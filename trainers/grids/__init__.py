"""Comparison grids of paper Tables 1-3 (``icm compare --grid NAME``; see ``icm_cli.compare``)."""
