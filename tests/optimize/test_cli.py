"""`tokenmill optimize` argument handling that fails before any work is done."""

from tokenmill.cli.main import main


def test_prune_amount_outside_zero_one_is_refused(tmp_path, capsys):
    code = main(
        ["optimize", "prune", "--method", "heads", "--amount", "1.5", "-o", str(tmp_path / "o")]
    )
    assert code == 2
    assert "--amount" in capsys.readouterr().err


def test_distill_too_many_layers_is_refused(tmp_path, capsys):
    code = main(
        ["optimize", "distill", "--layers", "99", "--steps", "1", "-o", str(tmp_path / "o")]
    )
    assert code == 2
    assert "--layers must be between 1 and 30" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_missing_base_report_is_an_error_not_a_crash(tmp_path, capsys):
    code = main(
        [
            "optimize",
            "prune",
            "--method",
            "2:4",
            "-o",
            str(tmp_path / "o"),
            "--base-report",
            str(tmp_path / "missing.json"),
        ]
    )
    assert code == 1
    assert "missing.json" in capsys.readouterr().err
