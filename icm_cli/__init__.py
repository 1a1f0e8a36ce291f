"""icm_cli."""
