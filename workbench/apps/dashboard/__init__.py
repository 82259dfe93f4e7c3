"""The Streamlit dashboard: streamlit_app.py (the entry script) runs shell.py, which draws the pages listed in
registry.py (one module each in screens/) from the queries layer (data.py, queries/); perf/ holds what makes it quick
(launch head start, primer, background prewarm)."""
