"""Platform core: settings, database, errors, users and auth, orders, Celery, console, CLI."""
