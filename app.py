"""TaskGalaxy Workbench dashboard.

    streamlit run app.py -- --workspace DIR
    workbench dashboard DIR            (binds 127.0.0.1)
    WORKBENCH_WORKSPACE=DIR streamlit run app.py
"""

from workbench.apps.dashboard.main import main

main()
