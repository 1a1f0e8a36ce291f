"""evaluate_metrics."""
