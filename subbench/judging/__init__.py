"""Judging through language models: the endpoint client, its response cache, prompt templates, agreement.

Kept apart from the judge plugins so the family ``openai`` (a text-only teacher) and the
judges share one client with the same retries, concurrency limit and key handling.
Nothing here imports ``openai`` at module import; the client does so when first used.
"""
