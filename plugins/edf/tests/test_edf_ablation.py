"""The Table 4 ablation script on the toy fixtures (tiny budgets: it only has to run and report)."""

import json

from ddtoolbox.testing import TOY_DISTILL
from ddtoolbox_edf import ablation


def test_ablation_runs_four_rows_and_resumes(toy_dataset, toy_buffer, tmp_path, capsys):
    argv = ["--buffer", toy_buffer, "--out", str(tmp_path), "--eval-runs", "2", "--eval-epochs", "2",
            "--dataset", toy_dataset, "--iterations", "2", *TOY_DISTILL, "--dae-every", "1"]
    assert ablation.main(argv) == 0
    out = capsys.readouterr().out
    table = (tmp_path / "ablation.md").read_text()
    assert table.strip() in out
    body = [line for line in table.splitlines() if line.startswith("| ") and "accuracy" not in line]
    assert [[c.strip() for c in line.split("|")[1:3]] for line in body] == [["", ""], ["", "✓"], ["✓", ""], ["✓", "✓"]]
    rows = json.loads((tmp_path / "ablation.json").read_text())["rows"]
    assert [r["row"] for r in rows] == ["neither", "cpd", "dae", "both"]
    assert all(len(r["runs"]) == 2 for r in rows)
    assert rows[0]["dae_area_first"] is None and rows[2]["dae_area_first"] is not None
    # every row used the same seed and matcher (DATM, as the paper's Table 4), the cpd rows the ablation's alpha
    assert {r["config"]["seed"] for r in rows} == {0} and {r["config"]["matcher"] for r in rows} == {"datm"}
    assert rows[1]["cpd_alpha"] == 0.25 and rows[3]["options"]["cpd_alpha"] == 0.25
    assert "cpd_alpha" not in rows[2]["options"] and rows[2]["options"]["dae_every"] == 1
    assert rows[0]["plugins"] == [] and rows[3]["plugins"] == ["cpd", "dae"]
    # each row's report (with its eval.json) and the comparison of the rows
    for r in rows:
        page = (tmp_path / r["row"] / "report.html").read_text()
        assert f"{r['mean'] * 100:.2f} ± {r['std'] * 100:.2f}%" in page and "eval.json" in page
    comparison = (tmp_path / "comparison.html").read_text()
    table = comparison.split("<section id='results'>")[1].split("</section>")[0]
    assert [row for row in ("neither", "cpd", "dae", "both") if f"<b>{row}</b>" in table] == ["neither", "cpd", "dae", "both"]
    assert "not evaluated" not in table
    # a second invocation reuses the finished rows; --no-report writes no page
    (tmp_path / "comparison.html").unlink()
    before = (tmp_path / "cpd" / "synthetic.pt").stat().st_mtime_ns
    assert ablation.main([*argv, "--no-report"]) == 0
    assert "already done" in capsys.readouterr().out
    assert (tmp_path / "cpd" / "synthetic.pt").stat().st_mtime_ns == before
    assert not (tmp_path / "comparison.html").exists()
