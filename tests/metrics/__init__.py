"""Tests of privrank.metrics."""
