"""The annotation-noise study: models trained on corrupted training masks (noise_runs), the
fixed-split models scored against corrupted test masks (noise_scores), and the per-dataset
report of both (noise)."""
