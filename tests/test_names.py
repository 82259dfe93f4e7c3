import re

import pytest

from workbench.taxonomy.names import NameProblem, check_name, name_key, normalize_name, replace_lookalikes, split_path


def test_normalisation_collapses_whitespace_and_nfkc():
    assert normalize_name("  Scene\u00a0 text\t\tOCR ") == "Scene text OCR"
    assert normalize_name("ｆｕｌｌｗｉｄｔｈ") == "fullwidth"
    assert name_key("Scene Text") == name_key("scene   TEXT")


@pytest.mark.parametrize("bad,reason", [
    ("a/b", "'/'"), ("a\nb", "newline"), ("a\x07b", "control character U+0007"), ("   ", "empty"),
    ("a~b", "separator"), ("x" * 201, "limit"),
])
def test_bad_names_are_refused_with_a_reason(bad, reason):
    with pytest.raises(NameProblem, match=re.escape(reason.strip("'"))):
        check_name(bad)


def test_lookalike_separators_are_read_as_tilde():
    text, found = replace_lookalikes("ocr\u223cscene text\uff5estreet signs")
    assert text == "ocr~scene text~street signs"
    assert len(found) == 2


def test_split_path_reports_empty_levels():
    assert split_path("a~ b ~c") == ["a", "b", "c"]
    for bad in ("a~~b", "~a", "a~", "a~ ~b"):
        with pytest.raises(NameProblem, match="empty level"):
            split_path(bad)
