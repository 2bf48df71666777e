"""Metrics and the bounded HTTP endpoint (``/metrics``, ``/healthz``, ``/readyz``, ``/status``).

May import: ``streamer.host`` and below, prometheus-client (the ``metrics`` extra). The CLI's
client half (``streamer status``, ``top``) lives in ``streamer.cli``.
"""
