"""The networks: U-Net parts and the configurable UNet, the mean-mask baseline,
devices and AMP, the checkpoint format.
"""
