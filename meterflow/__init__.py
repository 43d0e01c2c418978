"""meterflow's shared core: the vocabulary (meters, windows, receipt order, ids), the wire records
between processes, the event rules, settings, the error roots, the Kafka layer, the stores every
process shares (accounts, migrations, usage reads) and the lifecycle. It imports no process."""
