"""The data stages: download, synthetic stand-ins, EM and chest X-ray preprocessing, splits,
weight maps, augmentation.
"""
