"""What the two engines share: the stage scripts' plumbing,
the contract both read from dvc.yaml, sync.
"""
