"""Benchmark harness for lm-gateway: ``python -m bench`` (see ``bench/README.md``)."""
