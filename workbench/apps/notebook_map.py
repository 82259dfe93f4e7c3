"""The notebooks' embedding map: the stored projection as an interactive scatter with lasso, and acting on a selection.

    view = show_map(ws)                    # the stored projection (computed once if missing), coloured by category
    view                                   # the widget: its lasso tool, then a drag, selects; a legend row per category
    sel = view.selection()                 # what the lasso holds, as ids (image ids and task type ids)
    sel = view.select(ids)                 # or select by ids (a list, or `read_selection(tsv)` of an export)
    d = drill(ws, sel)                     # its images, samples and the default parent of a node proposed for it
    propose(ws, sel, "counting sheep")     # a proposed task type; its note says it came from the map selection
    flag(ws, sel, "blurry")                # flag the selection's Q&A samples (never selected nor exported)
    export_ids(sel, "selection.tsv")       # the ids as the dashboard's map exports them

The widget is jupyter-scatter's (`jscatter`, an anywidget: WebGL, every point in the browser, lasso, legend, the
selection synced back to Python as point indices). Measured against embedding-atlas's notebook widget
(EmbeddingAtlasWidget, DuckDB in the kernel answering the browser's queries), 40 categories: at 30k points 0.1 s to
build and 2.7 MB of widget state (2.1 MB of it the script) against 0.4 s and 5.8 MB of script plus 0.3 MB per
x/y/category query; at 400k points 1.0 s and 8.6 MB against 0.4 s and 5.8 MB plus 3.6 MB. Similar sizes;
jupyter-scatter takes its colours and legend from Python, so each first-level category gets its own colorcet
Glasbey colour and a legend row, which embedding-atlas's widget does not offer from Python.

The actions are the dashboard map's: `analysis.gap_items` (`drill(ws, "map", image_ids)`, `propose`,
`selection_tsv`) and `review.adjudication.flag`, with the reason the dashboard writes (`reason [provenance]`).
Without jupyter-scatter the map is a picture (matplotlib) with the same colours and legend, and a line saying what
to install; selecting is then by ids.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from workbench.analysis import gap_items, projection
from workbench.apps.notebook_trials import show_widget
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.review.adjudication import flag as flag_sample
from workbench.taxonomy.model import Node

INSTALL = "pip install 'taskgalaxy-workbench[notebooks]'"   # jupyter-scatter, colorcet
GREY = "#bdbdbd"   # UNMATCHED images


@dataclass
class Selection:
    """Points of the map by id: images and task types."""
    image_ids: list[str] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.image_ids or self.task_ids)

    def summary(self) -> str:
        return f"{len(self.image_ids):,} image(s), {len(self.task_ids):,} task type(s) selected"


def palette(categories: list[str]) -> dict[str, str]:
    """One distinct colour per category (colorcet's Glasbey, 256 colours, cycled beyond), grey for UNMATCHED."""
    import colorcet  # lazy import: a plotting library, needed only when a map is drawn

    named = [c for c in categories if c != projection.UNMATCHED]
    colours = {c: colorcet.glasbey[i % len(colorcet.glasbey)] for i, c in enumerate(named)}
    return {**colours, **({projection.UNMATCHED: GREY} if projection.UNMATCHED in categories else {})}


def map_points(ws: Workspace, *, method: str = "umap", sets: list[str] | None = None,
               compute: bool = True) -> tuple[projection.Projection, pd.DataFrame]:
    """The stored projection (the newest model's image and text sets, as `workbench map` picks them) and its points;
    computed and stored first when missing and `compute`."""
    available = projection.embedding_sets(ws.store)
    if not available:
        raise WorkbenchError("no embeddings yet: run the embed cell above (or `workbench embed WORKSPACE`) first")
    sets = sets or projection.default_sets(available)
    proj = projection.get_or_compute(ws, sets, method, compute=compute)
    if proj is None:
        raise WorkbenchError(f"no stored {method} projection of {', '.join(sets)}: run `workbench map {ws.root}`")
    return proj, projection.points(ws, proj)


class MapView:
    """The map of one stored projection: `widget` (jupyter-scatter) or, without it, a matplotlib picture."""

    def __init__(self, ws: Workspace, proj: projection.Projection, df: pd.DataFrame):
        self.ws, self.projection, self.points = ws, proj, df.reset_index(drop=True)
        cats = sorted(set(self.points["category"]), key=lambda c: (c == projection.UNMATCHED, c))
        self.colours = palette(cats)
        self.points["category"] = pd.Categorical(self.points["category"], categories=cats)
        self.scatter = self._scatter()
        self._row = {i: n for n, i in enumerate(self.points["item_id"])}

    def _scatter(self):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # its own deprecation notes (pandas 3), not the user's concern
                import jscatter  # lazy import: the widget library takes seconds to load, only for the map
        except ImportError:
            return None
        s = jscatter.Scatter(data=self.points, x="x", y="y", color_by="category", color_map=self.colours,
                             legend=True, tooltip=True, tooltip_properties=["kind", "category", "label"],
                             size=4 if len(self.points) < 50_000 else 1, lasso_initiator=True, height=480)
        return s

    @property
    def widget(self):
        return None if self.scatter is None else self.scatter.show()

    def line(self) -> str:
        kinds = self.points["kind"].value_counts()
        head = (f"{self.projection.method} map of {kinds.get('image', 0):,} image(s) and {kinds.get('task', 0):,} "
                f"task type(s), first-level categories: {len(self.colours)}")
        if self.scatter is None:
            return f"{head}; a picture: for the interactive map with lasso, {INSTALL}"
        return f"{head}. The lasso tool (the map's toolbar), then a drag around points, selects; then run the next cell"

    def _ipython_display_(self):
        from IPython.display import display

        print(self.line())
        if self.scatter is None:
            display(self.picture())
        else:   # with the note a reopened notebook needs (the widget is not saved with it)
            show_widget(self.widget, "The map")

    def picture(self):
        """The map as a matplotlib figure, every category in the legend."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 6))
        for cat, group in self.points.groupby("category", observed=True):
            ax.scatter(group["x"], group["y"], s=4 if len(self.points) < 50_000 else 0.5,
                       color=self.colours[str(cat)], label=str(cat), linewidths=0)
        ax.set_xticks([]), ax.set_yticks([])
        ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), fontsize=7, markerscale=3, frameon=False)
        fig.tight_layout()
        plt.close(fig)
        return fig

    def selection(self) -> Selection:
        """What the lasso (or `select`) holds now, as ids."""
        rows = [] if self.scatter is None else list(self.scatter.selection())
        return self._of_rows(rows)

    def select(self, ids) -> Selection:
        """Select these points by id (image or task type ids; a `Selection`); shown on the map at once. Ids not on
        the map are an error naming them."""
        wanted = [*ids.image_ids, *ids.task_ids] if isinstance(ids, Selection) else list(ids)
        missing = [i for i in wanted if i not in self._row]
        if missing:
            raise WorkbenchError(f"{len(missing)} id(s) are not points of this map, e.g. {', '.join(missing[:3])}: "
                                 "give image or task type ids of this workspace (its map's export)")
        rows = [self._row[i] for i in wanted]
        if self.scatter is not None:
            self.scatter.selection(rows)
        return self._of_rows(rows)

    def _of_rows(self, rows) -> Selection:
        picked = self.points.iloc[sorted(int(r) for r in rows)]
        return Selection(picked.loc[picked["kind"] == "image", "item_id"].tolist(),
                         picked.loc[picked["kind"] == "task", "item_id"].tolist())


def show_map(ws: Workspace, *, method: str = "umap", sets: list[str] | None = None) -> MapView:
    """The map of the stored projection (computed once when missing); display it (the notebook's last line)."""
    logging.getLogger("jscatter").setLevel(logging.ERROR)
    proj, df = map_points(ws, method=method, sets=sets)
    return MapView(ws, proj, df)


def read_selection(path: str | Path) -> Selection:
    """A selection from an export of the map (`export_ids` here, the dashboard map's TSV): `kind<TAB>id` lines."""
    p = Path(path).expanduser()
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise WorkbenchError(f"{p}: cannot read the selection ({exc.strerror}); give the TSV the map "
                             "exported") from None
    sel = Selection()
    for n, line in enumerate(lines, 1):
        if not line.strip() or (n == 1 and line.startswith("kind")):
            continue
        kind, _, item = line.partition("\t")
        if kind not in ("image", "task") or not item.strip():
            raise WorkbenchError(f"{p}:{n}: expected `image<TAB>id` or `task<TAB>id`, got {line[:60]!r}")
        (sel.image_ids if kind == "image" else sel.task_ids).append(item.strip())
    return sel


def drill(ws: Workspace, sel: Selection, *, limit: int | None = 50) -> gap_items.Drill:
    """The selection's images, their Q&A samples, and the default parent of a node proposed for it (the parent of
    the task type most of its images match best): the dashboard map's drill-down."""
    if not sel.image_ids:
        raise WorkbenchError("no images in the selection: draw a lasso around some images on the map (or "
                             "`view.select(ids)`), then run the cell again")
    return gap_items.drill(ws, "map", sel.image_ids, limit=limit)


def propose(ws: Workspace, sel: Selection, name: str, parent: str | None = "") -> Node:
    """Propose a task type `name` for the selected images, under `parent` ("": the drill's default parent; a path
    or id; None: the top level); its note records the map selection. Review it like any proposal."""
    return gap_items.propose(ws, drill(ws, sel, limit=None), name, parent)


def flag(ws: Workspace, sel: Selection, reason: str) -> list[str]:
    """Flag every Q&A sample of the selected images with `reason` (and the selection as provenance, as the
    dashboard does); returns the sample ids flagged (none: the images have no samples yet)."""
    if not (reason or "").strip():
        raise WorkbenchError("a flag needs a reason: say what is wrong with these samples")
    d = drill(ws, sel, limit=None)
    ids = d.samples["sample_id"].tolist()
    for sid in ids:
        flag_sample(ws, sid, f"{reason.strip()} [{d.provenance}]")
    return ids


def export_ids(sel: Selection, path: str | Path) -> Path:
    """Write the selection's ids as the dashboard's map exports them (TSV: kind, id); returns the path."""
    p = Path(path).expanduser()
    p.write_text(gap_items.selection_tsv(sel.image_ids, sel.task_ids), encoding="utf-8")
    return p
