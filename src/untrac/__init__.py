"""UnTrac: trace the influence of training datasets on a language model by unlearning them."""

__version__ = "0.1.0"
