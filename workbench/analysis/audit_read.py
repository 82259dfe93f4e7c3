"""Reading an SFT dataset for `workbench audit`, and refusing what cannot be audited.

Formats: LLaVA JSON (a list of {"id", "image", "conversations": [{"from": "human", "value"}, ...]}), JSONL,
ShareGPT (the same `conversations`, or OpenAI-style `messages` with role/content; a conversation stored as a
JSON string, as some Parquet dumps do, is parsed), Parquet files (or a folder of them) and Hugging Face
`datasets` folders (`save_to_disk`).

Per item: its first human turn (`instruction`, `<image>` stripped, what a person reads), the text that is
embedded (`query`: the first turn, followed by the later human turns when the first is short, and by the
start of the first answer when those are short still: "What is the date?" says little alone; the
boilerplate of public sets taken out, `audit_cues.py`), its format cues (`cues`), its id, its
image field and the dataset's own task label (`TASK_FIELDS`, or `--task-field`). Texts longer than
`MAX_CHARS` are cut there and counted (the sentence model reads 128 tokens; one 50 MB instruction once took
7 GB).

What cannot be audited is refused with one line naming the file, the item and the fix
(`WorkbenchError`): an item with no instruction (with the fields it has), text that is not UTF-8, a file that
is not Parquet, a format that does not match the file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.analysis.audit_cues import cue_mask, strip_boilerplate
from workbench.core.errors import WorkbenchError

FORMATS = ("llava-json", "jsonl", "parquet", "hf-datasets")
TASK_FIELDS = ("task", "task_name", "task_type", "category", "ability", "type", "source_task")
IMAGE_FIELDS = ("image", "images", "image_path", "file_name")
ID_FIELDS = ("id", "sample_id", "uid", "question_id")
CONV_FIELDS = ("conversations", "messages", "conversation")
TEXT_FIELDS = ("instruction", "question", "prompt", "query")
MAX_CHARS = 2000            # per instruction: longer ones are cut here (and counted)
SHORT_WORDS = 8             # a first turn with fewer words is embedded with the later human turns
ANSWER_CHARS = 300          # ... and, when those are short still, with the start of the first answer
USE_ANSWER = True
_IMAGE_TOKEN = re.compile(r"<image>\s*", re.I)
_SPACE = re.compile(r"\s+")


@dataclass
class Items:
    """What an audit reads of a dataset, one entry per item in file order."""

    fmt: str
    instructions: list[str]        # the first human turn
    queries: list[str]             # the text embedded
    ids: list[str]
    images: list[str | None]
    tasks: list[str | None] | None  # the dataset's own task labels (None: no task field)
    task_field: str | None
    truncated: int = 0              # texts cut at MAX_CHARS
    cues: list[int] = field(default_factory=list)   # audit_cues.cue_mask per item


def _clean(text) -> str:
    if isinstance(text, list):   # OpenAI-style content parts
        text = " ".join(p.get("text", "") for p in text if isinstance(p, dict))
    return _SPACE.sub(" ", _IMAGE_TOKEN.sub(" ", str(text or ""))).strip()


def _conversation(rec: dict):
    conv = next((rec[k] for k in CONV_FIELDS if rec.get(k) is not None), None)
    if isinstance(conv, str):          # a JSON string (some Parquet dumps)
        try:
            conv = json.loads(conv)
        except json.JSONDecodeError:
            return None
    return conv if isinstance(conv, (list, tuple, np.ndarray)) else None


def human_turns(rec: dict) -> list[str]:
    """Every human/user turn of a LLaVA/ShareGPT/messages record (`<image>` stripped), or the record's
    instruction/question/prompt/query field."""
    out = []
    for turn in _conversation(rec) or ():
        if isinstance(turn, dict) and str(turn.get("from") or turn.get("role") or "").lower() in ("human", "user"):
            text = _clean(turn.get("value") if turn.get("value") is not None else turn.get("content"))
            if text:
                out.append(text)
    if not out:
        out = [_clean(rec[k]) for k in TEXT_FIELDS if isinstance(rec.get(k), str) and rec[k].strip()][:1]
    return out


def first_answer(rec: dict) -> str:
    """The first gpt/assistant turn of a conversation ("" when none)."""
    for turn in _conversation(rec) or ():
        if isinstance(turn, dict) and str(turn.get("from") or turn.get("role") or "").lower() in ("gpt", "assistant"):
            return _clean(turn.get("value") if turn.get("value") is not None else turn.get("content"))
    return ""


def first_instruction(rec: dict) -> str:
    """The first human/user turn of a LLaVA/ShareGPT/messages record, `<image>` stripped."""
    turns = human_turns(rec)
    return turns[0] if turns else ""


def query_text(turns: list[str], answer: str = "") -> str:
    """The text embedded for an item: its first turn; when that is short, with the later human turns, and
    when those are short still, with the start of the first answer ("What is the date?" alone names no task;
    "... The letter is dated March 3" does)."""
    if not turns or len(turns[0].split()) >= SHORT_WORDS:
        return turns[0] if turns else ""
    text = " ".join(turns)
    if USE_ANSWER and answer and len(text.split()) < SHORT_WORDS:
        text = f"{text} {answer[:ANSWER_CHARS]}"
    return text


def image_of(rec: dict) -> str | None:
    for k in IMAGE_FIELDS:
        v = rec.get(k)
        if isinstance(v, (list, tuple, np.ndarray)) and len(v):
            v = v[0]
        if isinstance(v, str) and v.strip():
            return v.strip()
    return None


def detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return "hf-datasets"
        if any(path.glob("*.parquet")):
            return "parquet"
        raise WorkbenchError(f"{path}: a folder that is neither a Hugging Face `datasets` folder (state.json) "
                             "nor a folder of .parquet files")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "llava-json"
    raise WorkbenchError(f"{path}: unknown dataset format {suffix!r}; give a .json, .jsonl or .parquet file, "
                         "or a Hugging Face `datasets` folder")


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> WorkbenchError:
    return WorkbenchError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          f"re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}`)")


def _json_records(path: Path, fmt: str) -> Iterator:
    if path.is_dir():
        raise WorkbenchError(f"{path}: a folder, not a {fmt} file; use --format parquet or hf-datasets")
    if fmt == "llava-json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, exc) from None
        except json.JSONDecodeError as exc:
            raise WorkbenchError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg}); LLaVA JSON is a list "
                                 "of records") from None
        if isinstance(data, dict):   # {"data": [...]} wrappers
            data = next((v for v in data.values() if isinstance(v, list)), None)
        if not isinstance(data, list):
            raise WorkbenchError(f"{path}: expected a JSON list of records (LLaVA format)")
        yield from data
        return
    with path.open(encoding="utf-8") as f:
        n = 0
        try:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise WorkbenchError(f"{path}: line {n}: not valid JSON ({exc.msg})") from None
        except UnicodeDecodeError as exc:
            raise WorkbenchError(f"{path}: line {n + 1}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); "
                                 "re-save it as UTF-8 (e.g. with iconv -f latin1 -t utf-8)") from None


def _parquet_records(path: Path) -> Iterator:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except (pa.ArrowException, OSError) as exc:
            hint = "" if f.suffix.lower() == ".parquet" else f"; its suffix is {f.suffix!r}: drop --format parquet?"
            raise WorkbenchError(f"{f}: not a readable Parquet file ({str(exc).splitlines()[0]}){hint}") from None
        for batch in pf.iter_batches(batch_size=65536):
            yield from batch.to_pylist()


def _hf_records(path: Path) -> Iterator:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise WorkbenchError(f"{path}: not a Hugging Face `datasets` folder ({str(exc).splitlines()[0]}); "
                             "give the folder `save_to_disk` wrote") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
    for batch in ds.iter(batch_size=65536):
        keys = list(batch)
        yield from (dict(zip(keys, vals)) for vals in zip(*(batch[k] for k in keys)))


def records(path: Path, fmt: str) -> Iterator:
    """Records as dicts, in a stable order."""
    if fmt in ("llava-json", "jsonl"):
        yield from _json_records(path, fmt)
    elif fmt == "parquet":
        yield from _parquet_records(path)
    elif fmt == "hf-datasets":
        yield from _hf_records(path)
    else:
        raise WorkbenchError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")


def _no_instruction(path: Path, n: int, rec: dict) -> WorkbenchError:
    fields = ", ".join(sorted(map(str, rec))) or "none"
    conv = next((k for k in CONV_FIELDS if k in rec), None)
    why = (f"its `{conv}` ({type(rec[conv]).__name__}) holds no human/user turn with text" if conv else
           "it has no conversations/messages and no " + "/".join(TEXT_FIELDS) + " field")
    rid = next((f" (id {rec[k]!s:.40})" for k in ID_FIELDS if rec.get(k) is not None), "")
    return WorkbenchError(f"{path}: item {n}{rid} has no instruction: {why} (its fields: {fields}); every item "
                          "needs one (LLaVA `conversations` with a human turn)")


def _cap(text: str) -> tuple[str, bool]:
    return (text[:MAX_CHARS], True) if len(text) > MAX_CHARS else (text, False)


def read_items(path: str | Path, fmt: str | None = None, task_field: str | None = None) -> Items:
    """Every item of the dataset at `path`; refuses (WorkbenchError) what cannot be audited."""
    path = Path(path)
    if not path.exists():
        raise WorkbenchError(f"{path}: no such file or folder")
    if fmt is not None and fmt not in FORMATS:
        raise WorkbenchError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    fmt = fmt or detect_format(path)
    out = Items(fmt, [], [], [], [], [], task_field)
    for n, rec in enumerate(records(path, fmt)):
        if not isinstance(rec, dict):
            raise WorkbenchError(f"{path}: item {n}: a {type(rec).__name__}, not a record (dict)")
        if n == 0 and out.task_field is None:
            out.task_field = next((k for k in TASK_FIELDS if k in rec), None)
        elif n == 0 and out.task_field not in rec:
            raise WorkbenchError(f"{path}: item 0 has no field {out.task_field!r} (--task-field); its fields: "
                                 f"{', '.join(sorted(rec))}")
        turns = human_turns(rec)
        if not turns:
            raise _no_instruction(path, n, rec)
        first, cut1 = _cap(turns[0])
        answer = first_answer(rec)
        out.cues.append(cue_mask(turns, answer))
        query, cut2 = _cap(query_text([strip_boilerplate(t) for t in turns], answer))
        out.truncated += cut1 or cut2
        out.instructions.append(first)
        out.queries.append(query)
        out.ids.append(next((str(rec[k]) for k in ID_FIELDS if rec.get(k) is not None), str(n)))
        out.images.append(image_of(rec))
        if out.task_field:
            v = rec.get(out.task_field)
            out.tasks.append(None if v is None else str(v)[:200])   # type: ignore[union-attr]
    if not out.instructions:
        raise WorkbenchError(f"{path}: no items read")
    if not out.task_field:
        out.tasks = None
    return out


def read_dataset(path: str | Path, fmt: str | None = None, task_field: str | None = None):
    """(format, first instructions, own task labels or None, the task field used)."""
    it = read_items(path, fmt, task_field)
    return it.fmt, it.instructions, it.tasks, it.task_field
