"""SavedModel exports for TF Serving: directory layout, retrieval, ranking, warmup."""
