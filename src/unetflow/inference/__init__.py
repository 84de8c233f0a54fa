"""The infer stage: overlap-tile prediction with test-time augmentation, and `unetflow predict`."""
