"""datasets_scripts."""
