import subprocess
import sys

import pytest

from digitrec import cli


def test_help_lists_every_stage_verb() -> None:
    out = subprocess.run([sys.executable, "-m", "digitrec.cli", "--help"], capture_output=True, text=True, check=True)
    for verb in cli.STAGE_MODULES:
        assert verb in out.stdout


def test_data_without_dataset_is_a_clear_error(monkeypatch, capsys) -> None:
    monkeypatch.delenv("DIGITREC_DATA", raising=False)
    try:
        cli.main(["data", "stats", "--data", ""])
    except SystemExit as exc:
        assert "DIGITREC_DATA" in str(exc)
    else:
        raise AssertionError("expected an error")


def test_missing_dataset_folder_is_named_without_a_traceback(tmp_path, capsys) -> None:
    missing = tmp_path / "no-such-dataset"
    assert cli.main(["data", "stats", "--data", str(missing), "--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err


def test_train_refuses_settings_out_of_range_before_loading_data(tmp_path) -> None:
    missing = str(tmp_path / "no-dataset")  # never read: the check comes first
    for args, field in ((["--model", "dr", "--classes", "100", "--digit-weight", "0"], "digit_weight 0.0"),
                        (["--model", "v4", "--tenths-weight", "1"], "no digit-sum head"),
                        (["--model", "v4", "--label-smoothing", "1"], "label_smoothing 1.0"),
                        (["--model", "v4", "--weight-decay", "-0.1"], "weight_decay -0.1"),
                        (["--model", "v4", "--ema", "1.5"], "ema 1.5"),
                        (["--model", "v4", "--repeat-folder", "images/mine=0"], "'images/mine': 0 times"),
                        (["--model", "v4", "--repeat-folder", "images/mine=2.5"], "images/mine=2.5"),
                        (["--model", "v4", "--repeat-folder", "=3"], "FOLDER a path"),
                        (["--model", "v4", "--balance-folders", "-5"], "balance_folders -5")):
        with pytest.raises(SystemExit, match=field):
            cli.main(["train", *args, "--data", missing, "--out", str(tmp_path), "--runs", str(tmp_path)])


def test_docs_name_only_shipped_models() -> None:
    """Every model id the README, docs and build files name (e.g. 10cls_GRAY/dr) is shipped."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    files = [repo / "README.md", repo / "Makefile", repo / "platformio.ini", *sorted((repo / "docs").glob("*.md")),
             *sorted((repo / "firmware").rglob("CMakeLists.txt")), *sorted((repo / ".github").rglob("*.yml"))]
    named = {m for f in files for m in re.findall(r"\b\d+cls_(?:GRAY|RGB)/\w+", f.read_text())}
    assert len(named) > 10
    missing = sorted(m for m in named if not (repo / "exported_models" / m / "card.json").is_file())
    assert not missing, missing


def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    import re

    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_docs_links_resolve() -> None:
    """Every relative link in the README and docs names a file that exists, and its #anchor a heading there."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    pages = [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]
    anchors = {p: {_github_anchor(h) for h in re.findall(r"^#+ (.+)$", p.read_text(), re.M)} for p in pages}
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors.get(dest, set()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken
