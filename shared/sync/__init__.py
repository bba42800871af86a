"""Sync: reconcile runs (lifecycle, checkpoints, cursors) and, next, reconcile and apply."""
