"""The summarize stage: the tables over every dataset and model,
beside published reference numbers.
"""
