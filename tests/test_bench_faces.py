"""bench/faces.py --smoke: every section runs on demo faces and an untrained model, and its figures are
consistent (counts add up, rates are rates, an EXIF-rotated copy scores as the upright one)."""
import importlib.util
import json

from conftest import REPO


def test_bench_faces_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_faces", REPO / "bench" / "faces.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "faces.json"
    result = bench.main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    det = result["detection"]["demo"]
    assert det["n"] == 4 and sum(det["faces_per_image"].values()) == 4 and 0 <= det["detection_rate"] <= 1
    assert det["detection_rate_at_0.7"] == det["detection_rate"]  # MIN_CONFIDENCE is MTCNN's own 0.7
    padded = result["padded"]
    assert padded["no_face"]["pictures_with_a_detection"] == 0 and padded["no_face"]["listed_as_no_face"] == 4
    shift = padded["score_shift"]
    assert shift["before_whole_squash"]["abs_shift"]["n"] == shift["n_scored_after"] <= 4
    assert padded["two_faces"]["n"] == 2
    assert result["orientation"]["abs_shift_now"]["max"] < 1e-5  # PNG: the same pixels once turned upright
    tight = result["tight_auc"]["demo"]
    assert tight["whole"]["n_not_scored"] == 0 and 0 <= tight["faces"]["auc_with_no_face_scored_whole"] <= 1
