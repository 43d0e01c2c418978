"""meterflow's Grafana dashboards, as code (``dashboards.py``) and as the JSON it writes."""
