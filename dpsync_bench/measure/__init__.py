"""Measuring: the sweep runner, the harness and its loop, forwards, the rank group (torch)."""
