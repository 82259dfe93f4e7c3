"""`python -m workbench ...`: the same CLI as the `workbench` command (for a checkout with no install)."""

from workbench.apps.cli.main import entrypoint

if __name__ == "__main__":
    entrypoint()
