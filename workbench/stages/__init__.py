"""Every stage, LLM or not, on the stage contract (`base.py`), and the one seam its LLM calls go through
(`dispatch.py`). Stages never import an engine: the engine in effect plugs in through `dispatch.current()`."""
