"""Built-in offline models and tasks: nothing here downloads weights or data."""
