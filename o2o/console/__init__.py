"""The web console for pharmacists and doctors (server-rendered pages mounted at /console)."""
