"""Reusable graph layers."""

from invariance.graph.nn.gin import GINVirtualNode

__all__ = ["GINVirtualNode"]
