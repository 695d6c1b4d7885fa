"""The causal-LM stack: tokenizer and corpus of the tiny families, pretraining, the model handle, steering hooks.

Nothing here imports torch or transformers at module level; the plugin modules in
:mod:`subbench.default_plugins` import these helpers inside their methods.
"""
