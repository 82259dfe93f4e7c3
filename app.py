"""TaskGalaxy Workbench dashboard, from a checkout:

    streamlit run app.py -- --workspace DIR
    WORKBENCH_WORKSPACE=DIR streamlit run app.py
    workbench dashboard DIR            (binds 127.0.0.1; no checkout needed)

This file only runs the packaged entry script, workbench/apps/dashboard/streamlit_app.py (the one entry).
"""

import runpy

runpy.run_module("workbench.apps.dashboard.streamlit_app", run_name="__main__")
