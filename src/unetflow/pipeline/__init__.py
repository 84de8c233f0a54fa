"""The pipeline both engines run: the stage scripts' plumbing, the contract both read from
dvc.yaml, sync.
"""
