"""PostgreSQL that every process shares: connections, migrations, accounts and keys."""
