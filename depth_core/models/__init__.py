"""Depth network architectures, one module per family, written on timm backbones."""
