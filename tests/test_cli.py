import subprocess
import sys

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
