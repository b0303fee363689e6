"""Training the top: batching, stem features (live or cached), the loop, warm starts.

Import from the modules themselves (`edgefreeze.train.loop`, ...): tasks import
`train.batching`, so this package's import must stay free of the rest.
"""
