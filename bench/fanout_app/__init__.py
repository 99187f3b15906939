"""Minimal Channels project for bench/fanout.py (served by laurel, uvicorn and daphne)."""
