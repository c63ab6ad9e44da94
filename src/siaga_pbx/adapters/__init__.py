"""Thin adapters around the pure core: ARI, incidents, metrics, HTTP."""
