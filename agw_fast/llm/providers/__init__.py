"""LLM providers: each knows its paths, request rewriting and usage shape."""
