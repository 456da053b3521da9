"""Pydantic models of the HTTP API: what clients send and what they get back.

Request models own `to_sampling_params()`, the one place where OpenAI's field names
become the engine's SamplingParams.
"""
