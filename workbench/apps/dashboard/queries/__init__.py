"""The dashboard's reads and writes of a workspace, one module per page that needs its own (data.py holds what
several pages share: the workspace, table versions, the taxonomy frame, select's referee outcomes, the overview's
figures, images). Every SQL string and store call of the dashboard is here or in data.py; heavy reads are cached
and keyed on the versions of the tables they read (data.version)."""
