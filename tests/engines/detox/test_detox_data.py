"""Text readers on tiny files in the official layouts, seeded parts, and prompt files with bad lines."""

from __future__ import annotations

import json

import pytest

from mltk.core.errors import EXIT_MISSING
from mltk.data.text.sources import (
    TextDataError,
    in_slice,
    read_prompts,
    read_source,
    read_sources,
)


def write(path, text):
    path.write_text(text)
    return path


def test_each_official_layout_reads_with_its_labels(tmp_path):
    jigsaw = write(tmp_path / "train.csv", '"id","comment_text","toxic","severe_toxic","obscene","threat","insult",'
                   '"identity_hate"\n"a1","You are great",0,0,0,0,0,0\n"a2","Go to hell, idiot",1,0,1,0,1,0\n'
                   '"a3","Multi\nline comment",0,0,0,0,0,0\n')
    kaggle_test = write(tmp_path / "test.csv", ',id,comment_text,toxic,severe_toxic,obscene,threat,insult,'
                        'identity_hate\n0,b1,"unscored row",-1,-1,-1,-1,-1,-1\n1,b2,"scored row",0,0,0,0,0,0\n')
    davidson = write(tmp_path / "labeled_data.csv", ",count,hate_speech,offensive_language,neither,class,tweet\n"
                     "0,3,0,0,3,2,nice weather\n1,3,0,3,0,1,shut up hoe\n2,3,2,1,0,0,hateful words\n")
    rtp = write(tmp_path / "rtp.jsonl", json.dumps({"prompt": {"text": "So I said", "toxicity": 0.7},
                                                    "continuation": {"text": " no", "toxicity": 0.1}}) + "\n")
    labelled = write(tmp_path / "data.jsonl", '{"text": "kind words", "label": "non-toxic"}\n'
                     '{"text": "rude words", "label": 1}\n')
    plain = write(tmp_path / "corpus.txt", "first line\n\nsecond line\n")
    read = {name: [(e.text, e.label) for e in read_source(str(path))]
            for name, path in (("jigsaw", jigsaw), ("test", kaggle_test), ("davidson", davidson), ("rtp", rtp),
                               ("labelled", labelled), ("plain", plain))}
    assert read["jigsaw"] == [("You are great", 0), ("Go to hell, idiot", 1), ("Multi\nline comment", 0)]
    assert read["test"] == [("unscored row", None), ("scored row", 0)]  # -1 = unscored = unlabelled
    assert read["davidson"] == [("nice weather", 0), ("shut up hoe", 1), ("hateful words", 1)]
    assert read["rtp"] == [("So I said", 1)]
    assert read["labelled"] == [("kind words", 0), ("rude words", 1)]
    assert read["plain"] == [("first line", None), ("second line", None)]
    assert read_source(f"labelled:{labelled}") == read_source(str(labelled))  # an explicit format prefix


def test_parts_are_disjoint_and_cover_everything(tmp_path):
    path = write(tmp_path / "corpus.txt", "\n".join(f"sentence number {i}" for i in range(400)))
    parts = [read_sources([str(path)], bounds=b, seed=3) for b in ((0.0, 0.4), (0.4, 0.7), (0.7, 1.0))]
    texts = [{e.text for e in part} for part in parts]
    assert sum(len(t) for t in texts) == 400 and not (texts[0] & texts[1]) and not (texts[1] & texts[2])
    assert 100 < len(texts[0]) < 220  # about 40%
    assert in_slice("same text", (0.0, 0.5), 1) == in_slice("same text", (0.0, 0.5), 1)


def test_a_labelled_file_with_bad_rows_names_them(tmp_path):
    path = write(tmp_path / "bad.csv", "text,label\nfine,0\nbroken,maybe\nalso broken,\n")
    with pytest.raises(TextDataError, match=r"2 malformed lines: line 3: .*'maybe'.*; line 4") as info:
        read_source(str(path))
    assert info.value.exit_code == EXIT_MISSING


def test_unknown_layouts_and_missing_files_say_what_to_do(tmp_path):
    with pytest.raises(TextDataError, match="match no known layout"):
        read_source(str(write(tmp_path / "x.csv", "a,b\n1,2\n")))
    with pytest.raises(TextDataError, match="no such file"):
        read_source(str(tmp_path / "missing.txt"))


def test_prompt_files_report_every_malformed_line_and_skip_none(tmp_path):
    good = write(tmp_path / "p.jsonl", json.dumps({"prompt": {"text": "Hello", "toxicity": 0.2},
                                                   "challenging": False}) + "\n"
                 + json.dumps({"prompt": "Plain prompt", "id": 7}) + "\n\n")
    prompts = read_prompts(good)
    assert [(p.text, p.line, p.toxicity) for p in prompts] == [("Hello", 1, 0.2), ("Plain prompt", 2, None)]
    assert prompts[0].meta == {"challenging": False} and prompts[1].meta == {"id": 7}
    bad = write(tmp_path / "bad.jsonl", '{"prompt": {"text": "ok"}}\n{not json\n{"other": 1}\n\n'
                '{"prompt": {"text": "   "}}\n{"text": "fine"}\n')
    with pytest.raises(TextDataError) as info:
        read_prompts(bad)
    message = info.value.message
    assert "4 malformed prompt lines" in message
    for line in ("line 2: not JSON", "line 3: no prompt text", "line 4: blank", "line 5: empty prompt"):
        assert line in message
    assert "none were skipped" in info.value.hint
    plain = write(tmp_path / "p.txt", "first\n\nthird\n")
    with pytest.raises(TextDataError, match="line 2: empty prompt"):
        read_prompts(plain)
