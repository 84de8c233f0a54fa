"""tools/benchmarks.py: Snakemake's per-job benchmark files as one Markdown table."""

from __future__ import annotations

import math

import pytest

from benchmarks import main, read_benchmark, table

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write(path, *rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        HEADER + "".join(f"{s}\t0:00:00\t{rss}\t1\t1\t1\t0\t0\t0\t0\n" for s, rss in rows)
    )
    return path


def test_one_row_per_job_in_pipeline_order_with_summarize_last(tmp_path):
    write(tmp_path / "summarize.tsv", (1.25, 80.5))
    write(tmp_path / "synth_em/unet_modern/train.tsv", (12.0, 512.4))
    write(tmp_path / "synth_em/preprocess.tsv", (3.0, "NA"))
    write(tmp_path / "synth_em/download.tsv", (2.04, 60.0))
    write(tmp_path / "synth_cxr/download.tsv", (1.0, 50.0))
    assert table(tmp_path).splitlines() == [
        "| job | wall s | max RSS MB |",
        "|---|---:|---:|",
        "| download synth_cxr | 1.0 | 50 |",
        "| download synth_em | 2.0 | 60 |",
        "| preprocess synth_em | 3.0 | – |",
        "| train synth_em/unet_modern | 12.0 | 512 |",
        "| summarize | 1.2 | 80 |",
    ]


def test_repeats_give_the_mean_wall_time_and_the_largest_peak(tmp_path):
    path = write(tmp_path / "infer.tsv", (2.0, 100.0), (4.0, "NA"), (6.0, 300.0))
    assert read_benchmark(path) == (4.0, 300.0)
    wall, peak = read_benchmark(write(tmp_path / "x.tsv", (1.0, "NA")))
    assert wall == 1.0 and math.isnan(peak)


def test_no_files_or_a_foreign_file_is_an_error_line(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"error: no benchmark files under {tmp_path}\n"
    (tmp_path / "notes.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="not a Snakemake benchmark file"):
        table(tmp_path)
    assert main([str(tmp_path)]) == 1


def test_main_prints_the_table(tmp_path, capsys):
    write(tmp_path / "summarize.tsv", (0.5, 40.0))
    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.endswith("| summarize | 0.5 | 40 |\n")
