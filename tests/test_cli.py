"""The ``deepfake-detect`` parser (cli.py): every sub-command, choices that agree with the package, each
sub-command wired to its function, and a parser that imports nothing heavy (``--help`` stays fast)."""
import subprocess
import sys

import pytest

from deepfake_detect import cli

COMMANDS = ("prepare-splits", "train", "demo", "crop-faces", "report", "evaluate", "predict", "explain", "plots",
            "exps", "serve")


def _subparsers(parser):
    return next(a for a in parser._actions if a.dest == "command").choices


def test_every_sub_command_is_built():
    assert tuple(_subparsers(cli.get_args_parser())) == COMMANDS


def test_literal_choices_match_the_package():
    from deepfake_detect.data import SPLITS
    from deepfake_detect.demo import DEMO_KINDS
    from deepfake_detect.engine import TTA_MODES
    from deepfake_detect.predict import CROPS, FORMATS, NOTHING_SCORED
    from deepfake_detect.video import FRAMES

    assert cli.SPLITS == SPLITS and cli.DEMO_KINDS == DEMO_KINDS
    assert cli.TTA_CHOICES == ("checkpoint", *TTA_MODES)
    assert (cli.CROPS, cli.FORMATS, cli.FRAMES, cli.NOTHING_SCORED) == (CROPS, FORMATS, FRAMES, NOTHING_SCORED)


def test_train_takes_a_run_of_the_params_file(tmp_path, capsys):
    """The run is checked against `runs` of the params file actually read (--params), not a built-in list."""
    assert cli.get_args_parser().parse_args(["train", "simplenet-fakes"]).run == "simplenet-fakes"
    from conftest import PARAMS_YAML

    other = tmp_path / "other.yaml"
    other.write_text(PARAMS_YAML.read_text())
    assert cli.main(["train", "nope", "--params", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"{other}: no run 'nope' in 'runs' (runs: simplenet-fakes, simplenet-synth, " in err


@pytest.mark.parametrize("argv, func, values", [
    (["prepare-splits"], cli._cmd_prepare, {"params": "params.yaml"}),
    (["demo", "out", "--kind", "synthetic", "--n-train", "2", "--image-size", "32"], cli._cmd_demo,
     {"out": "out", "kind": "synthetic", "n_train": 2, "n_val": 90, "image_size": 32, "seed": 0}),
    (["report", "--check"], cli._cmd_report, {"check": True, "write": False}),
    (["evaluate", "--model", "m.pt", "--data", "d"], cli._cmd_evaluate,
     {"split": "test", "bootstrap": 1000, "batch_size": 64, "workers": -1, "device": "auto", "crop": "auto",
      "face_margin": None, "frames": 16}),
    (["predict", "--model", "m.pt", "a.png", "b", "--cam", "cams"], cli._cmd_predict,
     {"paths": ["a.png", "b"], "cam": "cams", "out": None, "format": None, "crop": "auto", "face_margin": None,
      "frames": 16, "per_frame": False}),
    (["predict", "--model", "m.pt", "v.mp4", "--crop", "whole", "--face-margin", "-0.2", "--frames", "4",
      "--per-frame", "--format", "json"], cli._cmd_predict,
     {"crop": "whole", "face_margin": -0.2, "frames": 4, "per_frame": True, "format": "json"}),
    (["explain", "--runs", "x", "y"], cli._cmd_explain, {"runs": ["x", "y"], "params": "params.yaml"}),
    (["plots", "HEAD", "main"], cli._cmd_plots, {"revs": ["HEAD", "main"], "out": "dvc_plots/offline.html"}),
    (["exps", "--pipeline", "real", "-A"], cli._cmd_exps, {"pipeline": "real", "metric": "auc", "all_commits": True}),
    (["serve"], cli._cmd_serve, {"host": "127.0.0.1", "port": 8000, "allow_remote": False, "max_upload_mb": 50.0}),
    (["serve", "--host", "0.0.0.0", "--allow-remote", "--port", "9000", "--max-upload-mb", "5"], cli._cmd_serve,
     {"host": "0.0.0.0", "port": 9000, "allow_remote": True, "max_upload_mb": 5.0}),
], ids=["prepare-splits", "demo", "report", "evaluate", "predict", "predict-options", "explain", "plots", "exps",
        "serve", "serve-remote"])
def test_sub_command_runs_its_function(argv, func, values):
    args = cli.get_args_parser().parse_args(argv)
    assert args.func is func
    assert {k: getattr(args, k) for k in values} == values


def test_parser_imports_nothing_heavy():
    code = ("import sys; from deepfake_detect.cli import get_args_parser; "
            "get_args_parser().parse_args(['demo', 'x']); "
            "print(sorted(m for m in ('torch', 'numpy', 'sklearn', 'matplotlib', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_lists_every_sub_command():
    proc = subprocess.run([sys.executable, "-m", "deepfake_detect.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and all(c in proc.stdout for c in COMMANDS)


@pytest.mark.parametrize("argv, message", [
    (["--crop", "face"], "argument --crop: invalid choice: 'face'"),
    (["--face-margin", "5"], "argument --face-margin: must be a number in [-0.5, 3], got '5'"),
    (["--face-margin", "wide"], "argument --face-margin: must be a number in [-0.5, 3], got 'wide'"),
    (["--frames", "0"], "argument --frames: must be an integer in [1, 300], got '0'"),
    (["--format", "xml"], "argument --format: invalid choice: 'xml'"),
], ids=["crop", "margin-range", "margin-word", "frames-0", "format"])
def test_predict_options_out_of_range_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.get_args_parser().parse_args(["predict", "--model", "m.pt", "a.png", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_predict_help_documents_the_exit_status():
    proc = subprocess.run([sys.executable, "-m", "deepfake_detect.cli", "predict", "--help"], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "3 when nothing could be" in " ".join(proc.stdout.split())
