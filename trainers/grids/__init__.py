"""Comparison grids of paper Tables 1-3 (``icm compare --grid NAME``; see ``trainers.compare``)."""
