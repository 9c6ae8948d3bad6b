"""Deployment exports: GGUF files for llama.cpp (``export_gguf``) and mergekit passthrough configs."""

from frankenllama.export.gguf import QTYPES, ExportError, export_gguf
from frankenllama.export.mergekit import to_mergekit_yaml

__all__ = ["QTYPES", "ExportError", "export_gguf", "to_mergekit_yaml"]
