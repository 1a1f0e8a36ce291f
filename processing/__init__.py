"""Scene-Enriched Modeling (paper §3.1): video decoding, the four frozen scene extractors and the feature cache."""
