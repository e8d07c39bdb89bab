"""HF checkpoint -> TensorRT-LLM engines with generation logits, and validation of engine directories.

A script folder that imports the library, never the reverse. See README.md and build.py.
"""
