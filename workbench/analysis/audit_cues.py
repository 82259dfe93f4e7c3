"""Format cues of public instruction sets, for `workbench audit`: boilerplate that names no task is taken out
of the text that is embedded, and a few formats that do name one are kept as evidence.

Boilerplate (removed before embedding; the same sentence on a million items only pulls them together):
"Answer the question using a single word or phrase.", "Answer with the option's letter from the given
choices directly.", "When the provided information is insufficient, respond with 'Unanswerable'.",
"Please answer yes or no.", "Reference OCR token: ..." (the token list; the fact that there is one is a cue).

Cues (`CUES`: name, the text that stands for it, how it is seen): an item may have several; each is a bit of
`cue_mask`. The audit embeds a cue's text like a task type's and adds `audit.CUE_WEIGHT` x its (max-scaled)
cosine with each task type, so a cue points at whatever task type of the workspace's own taxonomy is nearest,
not at a hard-coded category. Cues read the format, never the topic: a box or coordinates in the prompt or
reply, a request to caption the whole image, an OCR token list, code in the reply. A short-answer or
multiple-choice prompt is boilerplate only, not evidence: public sets wrap every task in it (OCR-VQA,
ChartQA, ScienceQA as much as VQAv2).
"""

from __future__ import annotations

import re

_NUM = r"\d*\.?\d+"
_BOX = re.compile(rf"\[\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*\]|<box>"
                  r"|\(\s*\d+\s*,\s*\d+\s*\)\s*,\s*\(\s*\d+|\bbounding box|\bcoordinates?\b", re.I)
_CAPTION = re.compile(r"\b(describe|summari[sz]e|elaborate on|narrate|analy[sz]e|explain)\s+"
                      r"(the |this |these |what you see in )?"
                      r"(given |provided |following |entire |whole |overall )?(elements of the )?"
                      r"(image|picture|photo|photograph|scene|visual content)s?\b(?!\s+(of|in|at|on) the\b)"
                      r"|\bwhat do you see\b|\bwhat is (happening|going on) in (the|this) (image|picture|photo)\b"
                      r"|\bcaption\b|\bdetailed description of\b|\bdescribe (it|this)\b", re.I)
_SHORT = re.compile(r"answer the question using a single word or phrase\.?|answer with a single word\.?", re.I)
_CHOICE_HINT = re.compile(r"answer with the option'?s letter from the given choices directly\.?", re.I)
_UNANSWERABLE = re.compile(r"when the provided information is insufficient, respond with '?unanswerable'?\.?", re.I)
_YESNO = re.compile(r"please answer yes or no\.?", re.I)
_OCR_TOKENS = re.compile(r"reference ocr tokens?:[^\n]*", re.I)
_CODE = re.compile(r"```|<html|<div|\bdef \w+\(|#include|\bfunction \w+\(|\bimport \w+", re.I)

# (name, text embedded for it). Order is the bit order of cue_mask: never reorder, only append.
CUES = (
    ("box", "a visual grounding task: give the bounding box coordinates of the region a phrase refers to"),
    ("caption", "an image captioning task: describe the whole image"),
    ("ocr_tokens", "reading the text written in the image (OCR)"),
    ("code", "writing or explaining program code shown in a screenshot"),
)


def strip_boilerplate(text: str) -> str:
    """The turn without the prompt boilerplate of public sets (kept when nothing else is left)."""
    out = text
    for rx in (_SHORT, _CHOICE_HINT, _UNANSWERABLE, _YESNO, _OCR_TOKENS):
        out = rx.sub(" ", out)
    out = re.sub(r"\s+", " ", out).strip()
    return out or text


def cue_mask(turns: list[str], answer: str) -> int:
    """The cues of one item (bits in `CUES` order), from its raw human turns and first answer."""
    first = turns[0] if turns else ""
    human = "\n".join(turns)
    seen = (
        bool(_BOX.search(human) or _BOX.search(answer[:300])),
        bool(_CAPTION.search(first)),
        bool(_OCR_TOKENS.search(human)),
        bool(_CODE.search(answer[:2000])),
    )
    return sum(1 << i for i, s in enumerate(seen) if s)


def cue_matrix(masks):
    """(items, len(CUES)) float32 0/1 from the masks."""
    import numpy as np

    m = np.asarray(masks, dtype=np.int64).reshape(-1, 1)
    return ((m >> np.arange(len(CUES))) & 1).astype(np.float32)
