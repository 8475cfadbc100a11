"""pthkit's command-line interface: thin typer commands over the Python API."""
