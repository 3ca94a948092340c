"""The operator's memory of the cluster (cache.py), the questions asked of it (views.py) and the
deletions a re-list finds (relist.py). The controller writes it; admission reads it."""
