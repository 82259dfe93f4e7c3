"""Dashboard pages (one module per page); app.py is the Streamlit entry point."""
