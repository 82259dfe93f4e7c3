"""The top layer: what users run (the CLI, the dashboard, the notebooks' helpers, the demo and doctor), calling
the layers below."""
