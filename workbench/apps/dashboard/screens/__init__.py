"""One module per dashboard page (registry.py lists them). Each draws its page from the queries layer (data.py,
queries/) and reads like a description of the UI. Not named `pages/`: Streamlit would run a `pages/` folder beside
the entry script (streamlit_app.py) as pages of its own."""
