"""How meterflow runs: launchers for local services and deployment assets."""
