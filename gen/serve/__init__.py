"""`python sample.py serve RUN [RUN ...]`: trained runs in a browser page and as an API (Gradio).

runs.py holds what the page does, without Gradio: each kind of run calls the pipeline sample.py
calls, with the same seeds and settings, and writes the same PNG files; inputs.py checks and
describes an upload. app.py builds the Gradio page on them (optional extra: pip install -e ".[serve]").
"""
from .inputs import DEFAULT_MAX_PIXELS
from .runs import Limits, ServedRun, load_runs

__all__ = ["DEFAULT_MAX_PIXELS", "Limits", "ServedRun", "load_runs"]
