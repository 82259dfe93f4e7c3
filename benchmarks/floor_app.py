"""The framework floor for bench_dashboard.py: a Streamlit page with what every dashboard page draws (a title,
a metric, a 3-bar Plotly chart, a 3-row dataframe) and no data behind it. Its first render in a new tab is the
time Streamlit + Plotly + the data grid take on this machine before any of our work."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

st.set_page_config(page_title="floor", layout="wide")
st.title("Floor")
st.metric("items", 3)
st.plotly_chart(go.Figure(go.Bar(x=["a", "b", "c"], y=[1, 2, 3])))
st.dataframe(pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}))
