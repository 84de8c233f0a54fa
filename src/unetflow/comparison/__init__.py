"""The compare stage: variants of one dataset on the same test images, with bootstrap
confidence intervals, paired tests and the stability of their ranking.
"""
