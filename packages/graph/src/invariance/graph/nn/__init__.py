"""Reusable graph layers."""

from invariance.graph.nn.gin import GINVirtualNode
from invariance.graph.nn.ppgn_transformer import PPGNTransformer

__all__ = ["GINVirtualNode", "PPGNTransformer"]
