"""What every part of the service shares: settings, database, schema, file store, queues, HTTP."""
