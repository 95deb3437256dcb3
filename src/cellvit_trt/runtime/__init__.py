"""Streaming runtime: sources, tiling, tissue detection, backends, pipeline, merge, writers."""
