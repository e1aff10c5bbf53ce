"""The console: one page for the people who run the model (served by the monitor)."""
