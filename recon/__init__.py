"""ZWFS reconstruction: analytic baseline, networks, shared vision blocks and losses."""
