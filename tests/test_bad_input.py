"""Bad input, fed on purpose: each test is the reproduction of a user error that used to end in a
traceback, a silently lost file or a half-written output, and checks that it is now one line naming
the file, key or path (exit code 2), or a listed skip -- and that nothing valid was overwritten."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from deepfake_detect import cli, evaluate, explain, train
from deepfake_detect.checkpoint import make_checkpoint
from deepfake_detect.data import DatasetError
from deepfake_detect.io import OutputError, save_torch
from deepfake_detect.models import get_model
from deepfake_detect.splits import SplitOptions, prepare_dataset

from conftest import REPO, make_tiny, tiny_params, write_image


@pytest.fixture
def labelled(tmp_path) -> Path:
    """real/ and fake/ with 3 images each."""
    root = tmp_path / "labelled"
    for i in range(6):
        write_image(root / ("real" if i < 3 else "fake") / f"{i}.png", i)
    return root


def _predict(ckpt, *paths, out=None) -> list[str]:
    return ["predict", "--model", str(ckpt), *map(str, paths), "--device", "cpu", "--quiet"] + (
        ["--out", str(out)] if out else [])


def _evaluate(ckpt, data, out=None) -> list[str]:
    return ["evaluate", "--model", str(ckpt), "--data", str(data), "--device", "cpu", "--quiet",
            "--bootstrap", "0"] + (["--out", str(out)] if out else [])


def _labels(csv_path: Path) -> dict[str, str]:
    """path -> verdict, or "skipped: <status>" for an input not scored."""
    return {r["path"]: r["verdict"] or f"skipped: {r['status']}" for r in csv.DictReader(open(csv_path))}


# ------------------------------------------------------------------------ 2. resume state vs. code
class Killed(Exception):
    """Stands in for a kill -9 after epoch 1 (the state of epoch 1 is on disk)."""


def _fit(root: Path, data: Path, kill_at: int | None = None, code: str | None = None) -> dict:
    """Two epochs of the tiny run; ``kill_at``: dies as that epoch starts; ``code``: as if saved by other code."""
    params = tiny_params(epochs=2, hflip=True, lr_scheduler="cosine")
    one_epoch = train.train_one_epoch

    def dies(t, epoch):
        if epoch == kill_at:
            raise Killed
        return one_epoch(t, epoch)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "train_one_epoch", dies)
        if code is not None:
            mp.setattr(train, "code_hash", lambda: code)
        return train.fit(params["tiny"], params, data_dir=data, models_dir=root / "models",
                         metrics_dir=root / "metrics", cache_dir=data.parent / "cache", progress=False)


def test_resume_state_of_other_code_or_shapes_starts_over(tmp_path, capsys):
    data = make_tiny(tmp_path, n=(8, 4, 4))
    _fit(tmp_path / "clean", data)
    clean = (tmp_path / "clean/metrics/tiny/metrics.json").read_text()

    # killed under other code (as if models/backbones.py had been edited since), rerun: starts over
    with pytest.raises(Killed):
        _fit(tmp_path / "edited", data, kill_at=2, code="the code before the edit")
    state = train.state_path(tmp_path / "edited/models", "tiny")
    assert state.exists()
    capsys.readouterr()
    assert _fit(tmp_path / "edited", data)["epochs_run"] == 2
    out = capsys.readouterr().out
    assert f"{state}: training state of another configuration, starting over (changed: code)" in out
    assert "resuming" not in out and not state.exists()
    assert (tmp_path / "edited/metrics/tiny/metrics.json").read_text() == clean

    # a state that matches the key but not the model (a resized layer): one line, then exactly a fresh run
    with pytest.raises(Killed):
        _fit(tmp_path / "resized", data, kill_at=2)
    state = train.state_path(tmp_path / "resized/models", "tiny")
    saved = torch.load(state, weights_only=True)
    name = next(k for k, v in saved["model"].items() if v.ndim == 2)
    saved["model"][name] = torch.zeros(3, 3)
    save_torch(state, saved)
    capsys.readouterr()
    assert _fit(tmp_path / "resized", data)["epochs_run"] == 2
    lines = [ln for ln in capsys.readouterr().out.splitlines() if str(state) in ln]
    assert len(lines) == 1 and "does not fit the model, starting over" in lines[0] and "size mismatch" in lines[0]
    assert not state.exists()
    assert (tmp_path / "resized/metrics/tiny/metrics.json").read_text() == clean  # the rollback left nothing behind


def test_unreadable_resume_state_starts_over(tmp_path, capsys):
    data = make_tiny(tmp_path, n=(8, 4, 4))
    state = train.state_path(tmp_path / "models", "tiny")
    state.parent.mkdir(parents=True)
    state.write_bytes(b"PK\x03\x04 cut short")
    assert _fit(tmp_path, data)["epochs_run"] == 2
    assert f"{state}: unreadable training state" in capsys.readouterr().out and not state.exists()


def test_training_into_unwritable_folder_fails_before_the_first_epoch(tmp_path):
    data = make_tiny(tmp_path, n=(8, 4, 4))
    (tmp_path / "metrics").write_text("a file where the metrics folder should be")
    params = tiny_params()
    with pytest.raises(OutputError, match=r"tiny/metrics.json: cannot write \(.*metrics is a file, not a folder\)"):
        train.fit(params["tiny"], params, data_dir=data, models_dir=tmp_path / "models",
                  metrics_dir=tmp_path / "metrics" / "train", cache_dir=tmp_path / "cache", progress=False)
    assert not (tmp_path / "models" / "tiny.pt").exists()


# ------------------------------------------------------------------------ 4. checkpoint fields
def _broken(ckpt: Path, change) -> Path:
    c = torch.load(ckpt, weights_only=True)
    change(c)
    torch.save(c, ckpt)
    return ckpt


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(arch="no-such-net"), r"fields 'arch' \('no-such-net'\).*unknown model 'no-such-net'"),
    (lambda c: c.pop("image_size"), r"field 'image_size' is missing \(expected an integer\)"),
    (lambda c: c.update(image_size="64"), r"field 'image_size' must be an integer, got '64'$"),
    (lambda c: c.update(image_size=40), r"'image_size' \(40\) do not make a model: .*image_size >= 50"),
    # the range of params.yaml's image_size: 1 used to call every image fake, 100000 to end in a MemoryError
    (lambda c: c.update(image_size=1), r"field 'image_size' must be in \[32, 1024\], got 1$"),
    (lambda c: c.update(image_size=100_000), r"field 'image_size' must be in \[32, 1024\], got 100000$"),
    (lambda c: c.update(arch_params={"width": 3}), r"'arch_params' \(\{'width': 3\}\).*unexpected keyword"),
    (lambda c: c.update(mean=[0.5, 0.5]), r"field 'mean' must be 3 numbers"),
    (lambda c: c.update(mean=[float("nan"), 0.5, 0.5]), r"field 'mean\[0\]' must be in \[0, 1\], got nan$"),
    (lambda c: c.update(std=[0.5, 0.0, 0.5]), r"field 'std\[1\]' must be in \(0, 1\], got 0.0$"),
    (lambda c: c.update(std=[0.5, 0.5, float("inf")]), r"field 'std\[2\]' must be in \(0, 1\], got inf$"),
    (lambda c: c.update(classes=["fake", "real"]), r"field 'classes' must be \['real', 'fake'\]"),
    (lambda c: c.update(threshold="high"), r"field 'threshold' must be a number, got 'high'$"),
    (lambda c: c.update(threshold=float("nan")), r"field 'threshold' must be in \[0, 1\], got nan$"),
    (lambda c: c.update(state_dict=[1, 2]), r"field 'state_dict' must be a dict of tensors"),
    (lambda c: c["state_dict"]["classifier.2.weight"].view(-1)[7].fill_(float("nan")),
     r"checkpoint weight 'classifier.2.weight' holds NaN or infinite values; the model is broken \(retrain it\)$"),
    (lambda c: c["state_dict"]["classifier.4.bias"].fill_(float("-inf")),
     r"checkpoint weight 'classifier.4.bias' holds NaN or infinite values"),
    (lambda c: c.update(metrics=None), r"field 'metrics' must be a dict"),
    (lambda c: c.update(state_dict=make_checkpoint(get_model("competition"), 64).state_dict),
     r"weights do not fit architecture 'simplenet': RuntimeError: Error\(s\) in loading state_dict"),
], ids=["unknown-arch", "no-image-size", "image-size-str", "image-size-no-model", "image-size-1",
        "image-size-100000", "unknown-arch-param", "mean-2", "mean-nan", "std-zero", "std-inf", "classes-swapped",
        "threshold-str", "threshold-nan", "state-dict-list", "weight-nan", "bias-inf", "metrics-none",
        "other-weights"])
def test_checkpoint_with_bad_field_names_file_and_field(tmp_path, tiny_ckpt, labelled, capsys, change, message):
    _broken(tiny_ckpt, change)
    for argv in (_predict(tiny_ckpt, labelled), _evaluate(tiny_ckpt, labelled)):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"deepfake-detect: error: {tiny_ckpt}: ") and len(err.strip().splitlines()) == 1
        assert re.search(message, err), err


def _overflowing(ckpt: Path) -> Path:
    """Finite weights whose logits overflow to +inf for both classes: softmax NaN for every image."""
    return _broken(ckpt, lambda c: (c["state_dict"]["classifier.4.weight"].fill_(1e38),
                                    c["state_dict"]["classifier.4.bias"].fill_(1e38)))


def test_non_finite_scores_are_an_error_naming_the_checkpoint(tmp_path, tiny_ckpt, labelled, capsys, monkeypatch):
    """They used to be verdicts (`p_fake nan, real` for every image), or left out of evaluate without a word."""
    from deepfake_detect.score import ScoreError

    _overflowing(tiny_ckpt)
    for argv, first in ((_predict(tiny_ckpt, labelled, out=tmp_path / "p.csv"), labelled / "fake" / "3.png"),
                        (_evaluate(tiny_ckpt, labelled), labelled / "real" / "0.png")):
        assert cli.main(argv) == 2
        assert capsys.readouterr().err == (
            f"deepfake-detect: error: {tiny_ckpt}: the model gives no finite p(fake) for 6 of 6 image(s) (e.g. "
            f"{first}): its weights or normalisation overflow; retrain it, or check the checkpoint's mean and std\n")
    assert not (tmp_path / "p.csv").exists()
    monkeypatch.chdir(tmp_path)  # the stage: the same error, not metrics over what is left
    (tmp_path / "data" / "fakes").mkdir(parents=True)
    with open(tmp_path / "data" / "fakes" / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "split"])
        w.writeheader()
        w.writerows({"path": str(p), "label": int(p.parent.name == "fake"), "split": "test"}
                    for p in sorted(labelled.glob("*/*.png")))
    from deepfake_detect.config import load_params

    params = load_params(REPO / "params.yaml")
    params["device"] = "cpu"
    with pytest.raises(ScoreError, match=r"models/tiny.pt: the model gives no finite p\(fake\) for 6 of 6"):
        evaluate.run_stage(params, "tiny", progress=False)
    assert not (tmp_path / "metrics").exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: shutil.copy(REPO / "README.md", p), "not a checkpoint (torch.save writes a zip archive; this is "
                                                    "another kind of file)"),
    (lambda p: p.write_bytes(b""), "an empty file, not a checkpoint"),
    (lambda p: torch.save({"format": "deepfake-detect/checkpoint-v1", "x": _Payload()}, p),
     "refused: it holds Python objects that a deepfake-detect checkpoint does not (only tensors, numbers, "
     "strings, lists and dicts are loaded, so that no code in a file runs); it was not loaded"),
    (lambda p: p.mkdir(), "a folder, not a checkpoint file"),
], ids=["readme", "empty", "pickled-code", "folder"])
def test_a_file_that_is_no_checkpoint_is_our_one_line_not_torchs_advice(tmp_path, labelled, capsys, make, message):
    """torch's own message advises `weights_only=False`, i.e. running the code of an untrusted file."""
    path = tmp_path / "model.pt"
    make(path)
    assert cli.main(_predict(path, labelled)) == 2
    err = capsys.readouterr().err
    assert err == f"deepfake-detect: error: {path}: {message}\n"
    assert "weights_only" not in err and not (tmp_path / "pwned").exists()


class _Payload:
    """Pickles to a call of os.system: what a hostile checkpoint holds."""

    def __reduce__(self):
        return os.system, ("touch pwned",)


def test_stage_checkpoint_without_dataset_is_a_checkpoint_error(tmp_path, tiny_ckpt, monkeypatch):
    from deepfake_detect.checkpoint import CheckpointError
    from deepfake_detect.config import load_params

    _broken(tiny_ckpt, lambda c: c.pop("dataset"))
    monkeypatch.chdir(tmp_path)
    params = load_params(REPO / "params.yaml")
    params["device"] = "cpu"
    with pytest.raises(CheckpointError, match=r"tiny\.pt: checkpoint does not say which dataset"):
        evaluate.run_stage(params, "tiny", progress=False)
    with pytest.raises(CheckpointError, match=r"tiny\.pt: checkpoint does not say which dataset"):
        explain.run_stage(params, "tiny", progress=False)


def test_empty_runs_are_a_user_error(tmp_path):
    """A bare ValueError once (a traceback); still a ValueError, now also one line (UserError) naming the file."""
    from deepfake_detect.config import load_params, override, read_params
    from deepfake_detect.errors import UserError

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(override(read_params(REPO / "params.yaml"), {"runs": None})))
    with pytest.raises(UserError, match=rf"^{path}: 'runs' must map each run's name to the training stage"):
        load_params(path)


# ------------------------------------------------------------------------ 5. files left out without a word
def test_symlink_loop_and_broken_link_are_listed_by_predict_and_evaluate(tmp_path, tiny_ckpt, labelled, capsys):
    real = labelled / "real"
    os.symlink("b", real / "a")
    os.symlink("a", real / "b")
    os.symlink("nowhere.png", labelled / "fake" / "gone.png")
    os.symlink(labelled / "real", labelled / "fake" / "elsewhere")
    reasons = {str(real / "a"): "symlink loop", str(real / "b"): "symlink loop",
               str(labelled / "fake" / "gone.png"): "broken symlink",
               str(labelled / "fake" / "elsewhere"): "symlink to a folder, not followed"}

    assert cli.main(_predict(tiny_ckpt, labelled, out=tmp_path / "p.csv")) == 0
    labels = _labels(tmp_path / "p.csv")
    assert {p: labels[p] for p in reasons} == {p: f"skipped: {why}" for p, why in reasons.items()}
    assert sum(not v.startswith("skipped") for v in labels.values()) == 6
    err = capsys.readouterr().err
    assert "skipped 4 file(s)" in err and all(f"{p}: {why}" in err for p, why in reasons.items())

    assert cli.main(_evaluate(tiny_ckpt, labelled, out=tmp_path / "m.json")) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n_skipped"] == 4 and sorted(m["skipped"]) == sorted(f"{p}: {why}" for p, why in reasons.items())
    assert (m["n_real"], m["n_fake"]) == (3, 3)


def test_every_fake_undecodable_names_the_files(tmp_path, tiny_ckpt, labelled, capsys):
    for f in (labelled / "fake").iterdir():
        f.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert cli.main(_evaluate(tiny_ckpt, labelled)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "0 fake" in err and "skipped 3 file(s)" in err
    assert all(f"{labelled / 'fake' / f'{i}.png'}: cannot decode image" in err for i in (3, 4, 5))


def test_prepare_splits_does_not_lose_a_symlink_loop(course_folder, tmp_path):
    d = course_folder / "train" / "fake"
    os.symlink("y.png", d / "x.png")
    os.symlink("x.png", d / "y.png")
    cfg = {"source": str(course_folder), "groups": None, "val_fraction": 0.2, "test_fraction": 0.2}
    with pytest.raises(DatasetError, match=r"2 file\(s\) in .* cannot be read or do not decode .*x\.png: symlink loop"):
        prepare_dataset("fakes", cfg, tmp_path / "out", progress=False)
    summary = prepare_dataset("fakes", cfg, tmp_path / "out", SplitOptions(on_bad_image="skip"), progress=False)
    assert summary["bad_skipped"] == [f"{d / 'x.png'}: symlink loop", f"{d / 'y.png'}: symlink loop"]
    assert summary["n_bad_skipped"] == 2 and summary["train_fake"] == 2


DROP_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
            "--inh-caps", "-dac_override,-dac_read_search"]
CLI = ("import json, sys; from deepfake_detect.cli import main; "
       "print(json.dumps([main(a) for a in json.loads(sys.argv[1])]))")


def _as_unprivileged(tmp_path: Path) -> list[str]:
    """The command prefix under which file permissions hold (root: setpriv without the DAC capabilities);
    skips the test where they cannot be made to hold."""
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and no setpriv to drop the DAC capabilities")
        prefix = DROP_DAC
    probe = tmp_path / "probe"
    probe.mkdir(mode=0o000)
    try:
        held = subprocess.run(prefix + ["ls", str(probe)], capture_output=True).returncode != 0
    finally:
        probe.rmdir()
    if not held:
        pytest.skip("file permissions cannot be taken away here")
    return prefix


def _cli_unprivileged(prefix: list[str], *argvs: list[str]) -> tuple[list[int], str]:
    proc = subprocess.run(prefix + [sys.executable, "-c", CLI, json.dumps(argvs)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1]), proc.stderr


def test_unreadable_subfolder_is_listed_and_read_only_output_is_one_line(tmp_path, tiny_ckpt, labelled):
    prefix = _as_unprivileged(tmp_path)
    sub = labelled / "fake" / "sub"
    write_image(sub / "hidden.png", 9)
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    sub.chmod(0o000)
    read_only.chmod(0o555)
    try:
        codes, err = _cli_unprivileged(prefix, _predict(tiny_ckpt, labelled, out=tmp_path / "p.csv"),
                                       _evaluate(tiny_ckpt, labelled, out=tmp_path / "m.json"),
                                       _predict(tiny_ckpt, labelled, out=read_only / "p.csv"),
                                       _evaluate(tiny_ckpt, labelled, out=read_only / "m.json"))
    finally:
        sub.chmod(0o755)
        read_only.chmod(0o755)
    why = "folder cannot be read (permission denied)"
    assert codes == [0, 0, 2, 2]
    assert _labels(tmp_path / "p.csv")[str(sub)] == f"skipped: {why}"
    assert json.loads((tmp_path / "m.json").read_text())["skipped"] == [f"{sub}: {why}"]
    for name in ("p.csv", "m.json"):
        assert f"deepfake-detect: error: {read_only / name}: cannot write (permission denied)" in err
    assert "Traceback" not in err and not list(read_only.iterdir())


# ------------------------------------------------------------------------ 6. write errors
def test_outputs_that_cannot_be_written_are_one_line(tmp_path, tiny_ckpt, labelled, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    for argv, out in ((_predict(tiny_ckpt, labelled, out=blocker / "p.csv"), blocker / "p.csv"),
                      (_evaluate(tiny_ckpt, labelled, out=blocker / "m.json"), blocker / "m.json"),
                      (_predict(tiny_ckpt, labelled, out=tmp_path), tmp_path)):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"deepfake-detect: error: {out}: cannot write (") and len(err.splitlines()) == 1
    assert "it is a folder" in err


def test_stage_into_unwritable_metrics_folder(tmp_path, tiny_ckpt, monkeypatch):
    from deepfake_detect.config import load_params

    monkeypatch.chdir(tmp_path)
    rows = [{"path": str(write_image(Path("imgs") / f"{i}.png", i)), "label": i % 2, "split": "test"}
            for i in range(4)]
    Path("data/fakes").mkdir(parents=True)
    Path("data/fakes/manifest.csv").write_text("path,label,split\n" + "".join(
        f"{r['path']},{r['label']},{r['split']}\n" for r in rows))
    Path("metrics").write_text("a file where metrics/ should be")
    params = load_params(REPO / "params.yaml")
    params["device"] = "cpu"
    with pytest.raises(OutputError, match=r"^metrics/evaluate/tiny\.json: cannot write \(metrics is a file"):
        evaluate.run_stage({**params, "evaluate-roc-det": {**params["evaluate-roc-det"], "bootstrap": 0}}, "tiny",
                           progress=False)


# ------------------------------------------------------------------------ 1. every stage script, as DVC runs it
@pytest.mark.parametrize("script, args, change, message", [
    ("evaluate.py", ["simplenet-fakes"], {"evaluate-roc-det": {"bootstrap": "many"}},
     "'evaluate-roc-det.bootstrap' must be an integer"),
    ("evaluate.py", ["nope"], {}, "models/nope.pt: checkpoint not found; 'runs' in params.yaml has no run 'nope'"),
    ("evaluate.py", ["simplenet-fakes"], {},
     "models/simplenet-fakes.pt: checkpoint not found; it is made by stage 'train-simplenet-fakes'"),
    ("explain.py", ["simplenet-fakes"], {"explain": {"n_examples": 0}},
     "'explain.n_examples' must be in [1, 64], got 0"),
    ("train.py", ["competition-fakes"], {"competition-fakes": {"epochs": 0}},
     "params.yaml: 'competition-fakes.epochs' must be in [1, 10000], got 0"),
    ("train.py", ["competition-fakes", "--params", "mine.yaml"], {"train-defaults": {"batch_size": 0}},
     "mine.yaml: 'train-defaults.batch_size' must be in [1, 4096], got 0"),
    ("train.py", ["nope", "--params", "mine.yaml"], {}, "mine.yaml: no run 'nope' in 'runs' (runs: simplenet-fakes,"),
    ("prepare_splits.py", [], {"data": {"fakes": {"source": "no/such/folder"}}}, "no/such/folder"),
    ("summarize.py", [], {}, "metrics/evaluate/simplenet-fakes.json: not found"),
    ("train.py", ["competition-fakes"], {"device": "cuda"},
     "params.yaml: 'device' is cuda, but this machine has no CUDA device (set it to auto or cpu)"),
    ("prepare_splits.py", [], {"data": {"synthetic": {"source": "../data/stylegan"}}},
     "params.yaml: 'data.synthetic.source' is '../data/stylegan', which does not exist (no "),
], ids=["evaluate-bad-param", "evaluate-unknown-run", "evaluate-no-checkpoint", "explain-range", "train-range",
        "train-other-params-file", "train-unknown-run", "prepare-missing-folder", "summarize-no-metrics",
        "train-no-gpu", "prepare-source-key"])
def test_stage_scripts_give_one_line_and_exit_2(tmp_path, script, args, change, message):
    """A user error in any stage, run as `dvc repro` runs it, is one line naming the key or file (the params file
    actually read), exit 2."""
    from deepfake_detect.config import override, read_params

    name = args[args.index("--params") + 1] if "--params" in args else "params.yaml"
    (tmp_path / name).write_text(yaml.safe_dump(override(read_params(REPO / "params.yaml"), change), sort_keys=False))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, also on a machine that has one
    res = subprocess.run([sys.executable, str(REPO / "stages" / script), *args], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env=env)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("deepfake-detect: error: ") and message in lines[-1], res.stderr
    assert "Traceback" not in res.stderr


def test_device_cuda_without_a_gpu_names_the_flag(tmp_path, tiny_ckpt, labelled, capsys, monkeypatch):
    """`--device cuda` used to be a 17-line traceback blaming params.yaml."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv in (_predict(tiny_ckpt, labelled), _evaluate(tiny_ckpt, labelled)):
        argv[argv.index("--device") + 1] = "cuda"
        assert cli.main(argv) == 2
        assert capsys.readouterr().err == ("deepfake-detect: error: --device is cuda, but this machine has no CUDA "
                                           "device (set it to auto or cpu)\n")


# ------------------------------------------------------------------------ 7. check first, then write
def test_failing_prepare_splits_leaves_the_manifests_as_they_were(tmp_path, course_folder, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["fakes"]["source"] = params["data"]["synthetic"]["source"] = str(course_folder)
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert cli.main(["prepare-splits"]) == 0
    outputs = [Path(p) for p in ("data/fakes/manifest.csv", "data/synthetic/manifest.csv",
                                 "metrics/data/fakes.json", "metrics/data/synthetic.json")]
    before = [p.read_bytes() for p in outputs]

    few = tmp_path / "few"  # 2 real and 1 fake: some split gets no fake, the last check fails
    for i, cls in enumerate(("real", "real", "fake")):
        write_image(few / cls / f"{i}.png", 50 + i)
    for name in ("fakes", "synthetic"):  # the failing dataset itself, and the one after a good one
        changed = {**params, "data": {**params["data"], name: {**params["data"][name], "source": str(few)}}}
        Path("params.yaml").write_text(yaml.safe_dump(changed))
        assert cli.main(["prepare-splits"]) == 2
        assert "has 1 real and 0 fake images; both are needed" in capsys.readouterr().err
        assert [p.read_bytes() for p in outputs] == before


# ------------------------------------------------------------------------ CLI numbers
@pytest.mark.parametrize("option, value, message", [
    ("--batch-size", "0", "argument --batch-size: must be an integer >= 1, got '0'"),
    ("--batch-size", "many", "argument --batch-size: must be an integer >= 1, got 'many'"),
    ("--workers", "-2", "argument --workers: must be an integer >= -1, got '-2'"),
    ("--bootstrap", "-1", "argument --bootstrap: must be an integer >= 0, got '-1'"),
    ("--split", "tset", "argument --split: invalid choice: 'tset'"),
], ids=["batch-0", "batch-word", "workers-minus-2", "bootstrap-minus-1", "split-typo"])
def test_numeric_options_out_of_range(tmp_path, tiny_ckpt, labelled, capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_:
        cli.main(_evaluate(tiny_ckpt, labelled) + [option, value])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    if option in ("--batch-size", "--workers"):
        with pytest.raises(SystemExit):
            cli.main(_predict(tiny_ckpt, labelled) + [option, value])
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("option, value, message", [
    ("--n-train", "1", "argument --n-train: must be an integer >= 2, got '1'"),
    ("--n-val", "0", "argument --n-val: must be an integer >= 2, got '0'"),
    ("--n-test", "two", "argument --n-test: must be an integer >= 2, got 'two'"),
    ("--image-size", "31", "argument --image-size: must be an integer >= 32, got '31'"),
    ("--seed", "-1", "argument --seed: must be an integer >= 0, got '-1'"),
], ids=["n-train-1", "n-val-0", "n-test-word", "image-size-31", "seed-minus-1"])
def test_demo_options_out_of_range(tmp_path, capsys, option, value, message):
    """Out-of-range numbers used to reach generate_dataset's ValueError (a traceback): now a usage error
    naming the option and its range, before anything is written."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", str(tmp_path / "demo"), option, value])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


# ------------------------------------------------------------------------ issue 27: metrics files named
def _report_copy(tmp_path: Path) -> Path:
    """README, docs, benchmarks, dvc.lock and metrics of both pipelines, copied: `report --check` passes there."""
    for rel in ("README.md", "docs", *(f"bench/results-{m}.json" for m in ("cpu-quiet", "cpu", "h100")),
                *(f"{p}/{f}" for p in (".", "real") for f in ("dvc.lock", "metrics/runs", "metrics/summary",
                                                              "metrics/evaluate"))):
        src, dst = REPO / rel, tmp_path / rel
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return tmp_path / "README.md"


@pytest.mark.parametrize("content, message", [
    (b"[0.9, 0.8]", r"simplenet-fakes\.json: a JSON list, not an object of metrics: rerun the stage that writes it "
                    r"\(dvc repro\)"),
    (b'"auc"', r"simplenet-fakes\.json: a JSON string, not an object"),
    (b'{"auc": 0.9, "note": "caf\xe9"}', r"simplenet-fakes\.json: not UTF-8 text \(byte 25\); damaged or edited by "
                                        r"hand: rerun the stage that writes it \(dvc repro\)"),
    (b'{"auc": 0.', r"simplenet-fakes\.json: truncated \(line 1, column 10: .*\): rerun the stage"),
])
def test_report_check_names_a_metrics_file_that_is_not_a_json_object(tmp_path, capsys, content, message):
    """Issue 27, rows 9 and 10: a list, a string, non-UTF-8 bytes or a cut-off file was an AttributeError or
    UnicodeDecodeError traceback."""
    readme = _report_copy(tmp_path)
    (tmp_path / "metrics" / "runs" / "simplenet-fakes.json").write_bytes(content)
    assert cli.main(["report", "--check", "--readme", str(readme)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and re.search(message, err), err


def _dvc_repo(root: Path) -> Path:
    """A git + DVC repository whose one stage declares metrics/runs/{a,b}.json, committed."""
    def sh(*args):
        subprocess.run(args, cwd=root, check=True, capture_output=True)

    (root / "metrics" / "runs").mkdir(parents=True)
    (root / "params.yaml").write_text("runs:\n  a: train-a\n  b: train-b\n")
    (root / "dvc.yaml").write_text("stages:\n  s:\n    cmd: echo\n    params: [runs]\n    metrics:\n"
                                   "      - metrics/runs/a.json:\n          cache: false\n"
                                   "      - metrics/runs/b.json:\n          cache: false\n")
    for run, auc in (("a", 0.9), ("b", 0.8)):
        (root / "metrics" / "runs" / f"{run}.json").write_text(json.dumps({"auc": auc}))
    sh("git", "init", "-q")
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "init")
    sh(sys.executable, "-m", "dvc", "init", "-q")
    sh("git", "add", "-A")
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "metrics")
    return root


def test_exps_names_a_metrics_file_that_is_not_utf8_and_shows_dvcs_own_error(tmp_path, monkeypatch, capsys):
    """Issue 27, row 11: DVC fails on the file and its last stderr line is its sign-off, which named no file."""
    monkeypatch.chdir(_dvc_repo(tmp_path))
    Path("metrics/runs/a.json").write_bytes(b'{"auc": 0.9, "note": "caf\xe9"}')
    assert cli.main(["exps"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "dvc exp show failed: ERROR: " in err, err
    assert "Having any troubles" not in err
    assert "metrics/runs/a.json: not UTF-8 text (byte 25)" in err and "rerun the stage that writes it" in err


def test_exps_says_which_metrics_file_is_truncated(tmp_path, monkeypatch, capsys):
    """Issue 27, row 12: a cut-off metrics file was shown as `–`, like a run that never ran, with no word."""
    monkeypatch.chdir(_dvc_repo(tmp_path))
    Path("metrics/runs/a.json").write_text('{"auc": 0.')
    assert cli.main(["exps"]) == 0
    out, err = capsys.readouterr()
    assert "exps: warning: metrics/runs/a.json: truncated (line 1, column 10" in err, err
    workspace = next(line for line in out.splitlines() if line.startswith("workspace"))
    assert workspace.split()[1:] == ["unreadable", "0.800"], out


def test_dvc_error_line_skips_the_sign_off():
    from deepfake_detect.metrics_files import dvc_error_line

    stderr = "ERROR: unexpected error - boom\n\nHaving any troubles? Hit us up at https://dvc.org/support, we are\n"
    assert dvc_error_line(stderr) == "ERROR: unexpected error - boom"
    assert dvc_error_line("\nHaving any troubles? Hit us up\n", 255) == "exit code 255"
    assert dvc_error_line("warning: x\nsomething broke\n") == "something broke"


# ------------------------------------------------------------------------ issue 27: crop-faces loses nothing
def _centre_face(im):
    """A stand-in detector: one face, the middle half of the picture."""
    from deepfake_detect.faces import Face

    w, h = im.size
    return [Face((w / 4, h / 4, 3 * w / 4, 3 * h / 4), 0.99)]


def _no_crop_may_happen(im):
    raise AssertionError("a photo was read before the checks on DST")


def _listed_and_written(dst: Path) -> tuple[set, set]:
    summary = json.loads((dst / "crop_faces.json").read_text())
    return ({Path(c["crop"]).relative_to(dst).as_posix() for c in summary["crops"]},
            {p.relative_to(dst).as_posix() for p in dst.rglob("*.png")})


def test_crop_faces_keeps_both_photos_of_one_name(tmp_path):
    """Issue 27, row 1: a.jpg and a.png both went to DST/real/a.png, one overwritten, three crops listed."""
    from deepfake_detect.crop import crop_folder

    src = tmp_path / "src"
    write_image(src / "real" / "a.png", 1, size=64)
    from PIL import Image
    Image.open(src / "real" / "a.png").save(src / "real" / "a.jpg", quality=95)
    write_image(src / "fake" / "b.png", 2, size=64)
    summary = crop_folder(src, tmp_path / "dst", size=32, detector=_centre_face, progress=False)
    listed, written = _listed_and_written(tmp_path / "dst")
    assert listed == written == {"real/a.jpg.png", "real/a.png.png", "fake/b.png.png"}
    assert summary["n_crops"] == 3 and summary["n_images"] == 3
    summary = crop_folder(src, tmp_path / "all", size=32, all_faces=True, detector=_centre_face, progress=False)
    listed, written = _listed_and_written(tmp_path / "all")
    assert listed == written == {"real/a.jpg.face1.png", "real/a.png.face1.png", "fake/b.png.face1.png"}


def test_crop_faces_refuses_a_dst_that_holds_files_and_replace_empties_it(tmp_path, labelled, capsys):
    """Issue 27, row 2: an older crop left in DST stayed there, unlisted, and prepare-splits would read it."""
    from deepfake_detect import crop

    dst = tmp_path / "dst"
    crop.crop_folder(labelled, dst, size=32, detector=_centre_face, progress=False)
    write_image(dst / "real" / "stale.png", 7)  # an older crop
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(crop, "FaceFinder", lambda: _no_crop_may_happen)
        assert cli.main(["crop-faces", str(labelled), str(dst), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"deepfake-detect: error: {dst}: already holds 3 entries")
    assert "--replace" in err and (dst / "real" / "stale.png").exists()
    with pytest.raises(OutputError, match=r"stale\.png is not listed in its crop_faces\.json"):  # issue 36, row 5
        crop.crop_folder(labelled, dst, size=32, detector=_no_crop_may_happen, progress=False, replace=True)
    (dst / "real" / "stale.png").unlink()
    crop.crop_folder(labelled, dst, size=32, detector=_centre_face, progress=False, replace=True)
    listed, written = _listed_and_written(dst)
    assert listed == written and len(written) == 6 and "real/stale.png" not in written
    other = tmp_path / "not-crops"
    write_image(other / "keep.png", 3)
    with pytest.raises(OutputError, match=r"not-crops: --replace empties only an earlier crop-faces output"):
        crop.crop_folder(labelled, other, detector=_no_crop_may_happen, progress=False, replace=True)
    assert (other / "keep.png").exists()
    with pytest.raises(Exception, match="must not hold"):
        crop.crop_folder(labelled, labelled.parent, detector=_no_crop_may_happen, progress=False, replace=True)


@pytest.mark.parametrize("option, value, message", [
    ("--size", "100000", "argument --size: must be an integer in [32, 1024], got '100000'"),
    ("--size", "8", "argument --size: must be an integer in [32, 1024], got '8'"),
    ("--margin", "9", "argument --margin: must be a number in [-0.5, 3], got '9'"),
])
def test_crop_faces_size_and_margin_have_ranges(tmp_path, labelled, capsys, option, value, message):
    """Issue 27, row 3: --size 100000 had no upper bound and ran out of memory."""
    from deepfake_detect.config import ParamsError
    from deepfake_detect.crop import crop_folder

    with pytest.raises(SystemExit):
        cli.main(["crop-faces", str(labelled), str(tmp_path / "dst"), option, value])
    assert message in capsys.readouterr().err
    with pytest.raises(ParamsError, match=r"crop-faces: '--size' must be in \[32, 1024\], got 100000"):
        crop_folder(labelled, tmp_path / "dst", size=100000, detector=_no_crop_may_happen, progress=False)
    assert not (tmp_path / "dst").exists()


def test_cli_crop_ranges_are_the_modules():
    from deepfake_detect.crop import MARGIN, SIZE

    assert cli.CROP_SIZE == (SIZE.lo, SIZE.hi) and cli.CROP_MARGIN == (MARGIN.lo, MARGIN.hi)


def test_crop_faces_dst_class_folder_that_is_a_file_fails_before_any_crop(tmp_path, labelled, capsys):
    """Issue 27, row 4: DST/real a file was a clear line only after cropping fake/, leaving DST/fake/... and no
    crop_faces.json."""
    from deepfake_detect import crop

    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "real").write_text("a file")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(crop, "FaceFinder", lambda: _no_crop_may_happen)
        assert cli.main(["crop-faces", str(labelled), str(dst), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{dst}: already holds 1 entry (e.g. real)" in err
    assert sorted(p.name for p in dst.iterdir()) == ["real"]
    with pytest.raises(OutputError, match=r"dst/real: cannot write crops there \(it is a file, not a folder\)"):
        crop.crop_folder(labelled, dst / "real", detector=_no_crop_may_happen, progress=False)


def test_crop_faces_into_read_only_dst_fails_before_the_first_photo(tmp_path, labelled):
    """Issue 27, row 4: with a read-only DST and faceless photos the error came only after every image."""
    prefix = _as_unprivileged(tmp_path)
    dst = tmp_path / "read-only"
    dst.mkdir()
    dst.chmod(0o555)
    code = ("import sys; from deepfake_detect import crop, cli\n"
            "def boom(im): raise SystemExit('a photo was read')\n"
            "crop.Detector = lambda: boom\n"
            "sys.exit(cli.main(sys.argv[1:]))")
    try:
        proc = subprocess.run(prefix + [sys.executable, "-c", code, "crop-faces", str(labelled), str(dst), "--quiet"],
                              capture_output=True, text=True, timeout=300)
    finally:
        dst.chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"deepfake-detect: error: {dst / 'crop_faces.json'}: cannot write (permission denied)"
    assert not list(dst.iterdir())
