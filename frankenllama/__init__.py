"""frankenllama: find redundant layers of llama-family models, remove them, heal, and measure.

The five entry points of the workbook::

    from frankenllama import load_model, layer_similarity, select_layers, drop_layers, perplexity
"""

from frankenllama.models import load_model
from frankenllama.eval.perplexity import perplexity
from frankenllama.selection import select_layers
from frankenllama.similarity import layer_similarity
from frankenllama.surgery import drop_layers

__version__ = "0.1.0"
__all__ = ["drop_layers", "layer_similarity", "load_model", "perplexity", "select_layers"]
