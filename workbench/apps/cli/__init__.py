"""The command line: `app.py` holds the typer application and shared arguments, one module per area registers
its commands on it, and `main.py` imports them all and runs the application (the console script's entry)."""
