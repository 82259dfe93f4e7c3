"""The dashboard's one Streamlit entry script, shipped in the package: `workbench dashboard DIR` serves it
(serve.streamlit_command), and the repository's app.py runs it for `streamlit run app.py -- --workspace DIR`."""

from workbench.apps.dashboard.shell import main

main()
