"""unetflow: a reproducible U-Net (Ronneberger et al. 2015) workflow for Snakemake and DVC."""

__version__ = "0.1.0"
