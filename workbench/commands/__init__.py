"""CLI command groups, one module per area. Each module imports `app` from workbench.cli and
registers its commands on it; workbench.cli loads the modules named in COMMAND_MODULES."""
