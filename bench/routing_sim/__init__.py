"""Routing simulator and routing-overhead measurement (``python -m bench.routing_sim``)."""
