"""`vatt demo`, reduced: the trained tiny model beats the same architecture at random init on
zero-shot text->video retrieval and on the linear probe; the report has the documented keys.

The full default demo (10 minutes, 200 clips) measured margins are in docs/TRAINING.md; this
reduced run (fixed steps, a smaller corpus) asserts a safe fraction of its own measured margins.
"""

import json

import pytest

from vatt.cli.main import main

CLIPS, STEPS = 96, 200
# Measured gains in text->video R@5 + R@10 (24 videos): +0.29 for this 200-step run, +0.17 for a
# 120-step one; the assertion keeps about a third to half. Full demo margins: docs/TRAINING.md.
MIN_RECALL_GAIN = 0.08


@pytest.mark.slow
def test_reduced_demo_beats_random_init_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--clips", str(CLIPS), "--steps", str(STEPS), "--minutes", "0"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "text->video R@1" in printed and "linear probe accuracy" in printed
    report = json.loads((out / "report.json").read_text())
    rr, lp, tr = report["retrieval"], report["linear_probe"], report["train"]
    for name in ("pretrained", "random_init"):
        assert {"R@1", "R@5", "R@10", "MedR"} <= set(rr[name])
        assert all(0.0 <= rr[name][k] <= 1.0 for k in ("R@1", "R@5", "R@10"))
        assert 0.0 <= lp[name] <= 1.0
    assert rr["chance_R@1"] == pytest.approx(1 / rr["num_videos"]) and lp["chance"] == pytest.approx(0.25)
    assert tr["steps"] == STEPS and tr["seconds"] > 0 and tr["clips_per_second"] > 0
    assert tr["final_loss"] < 3.9  # chance: log(2 x 32) = 4.16

    def recall(res):
        return res["R@5"] + res["R@10"]

    def mean_rank(name):  # over both directions: 2 x 24 ranks, steadier than one median
        return rr[name]["MeanR"] + rr["video_to_text"][name]["MeanR"]

    assert recall(rr["pretrained"]) >= recall(rr["random_init"]) + MIN_RECALL_GAIN, rr
    assert mean_rank("pretrained") < mean_rank("random_init"), rr
    assert lp["pretrained"] > lp["random_init"], lp
    for png in ("loss_curves.png", "retrieval_examples.png", "tsne_video_text.png"):
        assert (out / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![loss curves](plots/loss_curves.png)" in (out / "report.md").read_text()
