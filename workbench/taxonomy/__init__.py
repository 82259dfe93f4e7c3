"""The task taxonomy: nodes, `~` paths, import/export and statistics."""

from workbench.taxonomy.model import Node, Provenance, Taxonomy, TreeIndex  # noqa: F401
