"""The evaluate stage: metrics (overlap, boundary, ISBI), per-image scores, subgroups,
the summary row.
"""
