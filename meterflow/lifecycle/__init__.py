"""How a process runs: the component protocol, the driver that starts and stops components, and
supervision of background tasks."""
