"""Stage input and output: images, atomic outputs, the processed-dataset contract, logging,
progress.
"""
