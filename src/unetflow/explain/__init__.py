"""The explain stage: occlusion sensitivity, feature maps and latent clusters of a trained U-Net."""
