"""Generation back ends beyond the in-process transformers model: OpenAI-compatible endpoints and vLLM.

Each exposes the same ``generate`` as :class:`subbench.lm.handle.LMHandle`, so traits and
domains drive any of them unchanged; heavy or optional libraries load on first use.
"""
