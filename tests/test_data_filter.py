"""``subbench data filter``: decisions per row, kept rows, the summary, and one-line errors for bad input."""

from __future__ import annotations

import json

import pytest

from subbench.cli import main


def run(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(["data", "filter", *map(str, args)])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def write_rows(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [
    {"id": "a", "prompt": "p", "response": "1, 2, 3"},
    {"response": " 1, 2, 3"},
    {"id": 7, "response": "100, 666"},
    {"id": 8, "response": "1, ٣"},
    {"id": 9, "response": "7" * 5000},
    {"id": 10, "response": None},
]


def read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_cloud2025_decisions_kept_rows_and_summary(tmp_path, capsys):
    src = write_rows(tmp_path / "teacher.jsonl", ROWS)
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "numbers", src, "--set", "filter=cloud2025", "--set", "banned_numbers=[]", "--out", out)
    assert code == 0
    assert read(out / "decisions.jsonl") == [
        {"id": "a", "kept": True, "reason": None},
        {"id": 1, "kept": False, "reason": "surrounding-whitespace"},
        {"id": 7, "kept": True, "reason": None},
        {"id": 8, "kept": False, "reason": "non-ascii-digit"},
        {"id": 9, "kept": False, "reason": "number-too-long"},
        {"id": 10, "kept": False, "reason": "empty"},
    ]
    assert read(out / "kept.jsonl") == [ROWS[0], ROWS[2]]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == 6 and summary["kept"] == 2 and summary["rate"] == pytest.approx(1 / 3)
    assert summary["params"]["filter"] == "cloud2025" and summary["params"]["banned_numbers"] == []
    assert summary["rejections"] == {"empty": 1, "non-ascii-digit": 1, "number-too-long": 1,
                                     "surrounding-whitespace": 1}
    assert "rows: 6  kept: 2  rate: 0.333" in stdout
    assert "  number-too-long: 1" in stdout and f"wrote {out / 'decisions.jsonl'}" in stdout
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_default_style_and_default_out(tmp_path, capsys):
    src = write_rows(tmp_path / "teacher.jsonl", ROWS)
    code, stdout, _ = run(capsys, "numbers", src)
    out = tmp_path / "teacher.filtered"
    assert code == 0 and f"wrote {out / 'decisions.jsonl'}" in stdout
    reasons = [d["reason"] for d in read(out / "decisions.jsonl")]
    # lenient: surrounding whitespace is fine, 666 is on the tiny default banned list
    assert reasons == [None, None, "banned-number", "non-ascii-digit", "number-too-long", "empty"]


def test_rerun_replaces_the_outputs(tmp_path, capsys):
    src = write_rows(tmp_path / "r.jsonl", ROWS[:2])
    out = tmp_path / "out"
    assert run(capsys, "numbers", src, "--out", out)[0] == 0
    write_rows(src, ROWS[2:3])
    assert run(capsys, "numbers", src, "--out", out)[0] == 0
    assert read(out / "decisions.jsonl") == [{"id": 7, "kept": False, "reason": "banned-number"}]
    assert (out / "kept.jsonl").read_text() == ""


@pytest.mark.parametrize("lines,args,message", [
    (None, [], "no such file"),
    (['{"response": "1"}', "{not json"], [], "r.jsonl:2: not valid JSON"),
    (['{"id": 1, "text": "1, 2"}'], [], "r.jsonl:1: a row needs a \"response\" field"),
    (['[1, 2]'], [], "r.jsonl:1: a row needs a \"response\" field"),
    (['{"response": 12}'], [], "r.jsonl:1: \"response\" must be a string"),
    (['{"response": "1"}'], ["--set", "filtr=cloud2025"], "unknown parameter 'filtr' for domain 'numbers'"),
    (['{"response": "1"}'], ["--set", "filter=strict"], "parameter 'filter': expected one of lenient, cloud2025"),
    (['{"response": "1"}'], ["--set", "filter"], "expected key=value"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, lines, args, message):
    src = tmp_path / "r.jsonl"
    if lines is not None:
        write_rows(src, lines)
    out = tmp_path / "out"
    code, stdout, stderr = run(capsys, "numbers", src, *args, "--out", out)
    assert code == 2
    assert message in stderr and len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert not out.exists()  # nothing written on bad input


def test_unknown_domain(tmp_path, capsys):
    src = write_rows(tmp_path / "r.jsonl", ROWS)
    code, _, stderr = run(capsys, "numbrs", src)
    assert code == 2 and "Unknown domain 'numbrs'. Did you mean: numbers?" in stderr


def test_out_that_is_a_file(tmp_path, capsys):
    src = write_rows(tmp_path / "r.jsonl", ROWS)
    (tmp_path / "taken").write_text("x")
    code, _, stderr = run(capsys, "numbers", src, "--out", tmp_path / "taken")
    assert code == 2 and "is a file, not a folder" in stderr


def test_works_for_any_domain_with_a_filter(tmp_path, capsys):
    """A domain without its own filter (the base class keeps everything) still gets decisions."""
    src = write_rows(tmp_path / "r.jsonl", [{"response": "anything"}, {"response": ""}])
    code, stdout, _ = run(capsys, "aux-logits", src, "--out", tmp_path / "o")
    assert code == 0 and "rows: 2  kept: 2  rate: 1.000" in stdout
