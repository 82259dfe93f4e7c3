"""The command line: `app.py` holds the typer application, the shared arguments and `COMMANDS` (which module
registers each command), one module per area registers its commands on it, and `main.py` runs the application (the
console script's entry). A command's module is imported only when that command runs or shows its own help."""
