"""TaskGalaxy Workbench: build and curate hierarchical vision task taxonomies and
the image-Q&A instruction data generated from them."""

__version__ = "0.1.0"

from workbench.core.errors import WorkbenchError  # noqa: F401
from workbench.core.workspace import Workspace  # noqa: F401
