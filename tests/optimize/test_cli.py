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


def test_an_int4_group_that_does_not_divide_the_rows_is_refused_before_calibrating(
    tmp_path, capsys
):
    from pathlib import Path

    base = Path(__file__).parents[2] / "docs" / "optimize" / "onnx" / "report.json"
    code = main(
        [
            "optimize",
            "quantize",
            "--method",
            "int4",
            "--group-size",
            "128",
            "-o",
            str(tmp_path / "o"),
            "--eval",
            "quick",
            "--base-report",
            str(base),
        ]
    )
    err = capsys.readouterr().err
    assert code != 0
    assert "--group-size 128 does not divide" in err and "576" in err
    assert "use --group-size 32" in err
