"""The file `workbench dashboard` hands to `streamlit run` (the same as the repository's app.py)."""

from workbench.apps.dashboard.main import main

main()
