"""comparison.md: the result of :func:`unetflow.comparison.compare.compare` for a reader,
one section per metric (variants, pairs, Friedman, ranking stability, a verdict sentence).

Cells are formatted here (each metric with its own decimals), so the tables only lay out
strings; summary/tables.py is not imported, which would make summary's references.yaml a
code dependency of the compare stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unetflow.comparison.runs import FIXED_SPLIT

#: Decimals of a metric's values (distances in pixels need fewer than overlaps).
DECIMALS = {"hd95": 2, "assd": 2}


def read_comparison(folder: Path, dataset: str) -> dict[str, Any]:
    """The compare stage's result for `dataset`: `folder`/<dataset>.json."""
    path = Path(folder) / f"{dataset}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; expected the compare stage's result")
    return json.loads(path.read_text())


def markdown_table(rows: list[dict[str, str]], columns: tuple[str, ...]) -> str:
    """A GitHub-flavoured Markdown table of formatted cells (| escaped)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = (row[column].replace("|", "\\|") for column in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_markdown(result: dict[str, Any]) -> str:
    """The whole of comparison.md: how it was computed, then one section per metric."""
    settings = result["settings"]
    lines = [
        "# Comparison of the variants",
        "",
        f"{result['n_images']} test images, the same for every variant; each image's score is "
        "its mean over the training seeds. 95 % CIs are BCa bootstrap intervals "
        f"({settings['n_boot']} resamples, seed {settings['seed']}); p is the two-sided "
        "Wilcoxon signed-rank test of the paired scores, Holm-adjusted over the pairs of each "
        f"metric; significant: Holm p < {settings['alpha']}. Effect is the matched-pairs "
        "rank-biserial correlation and W/T/L the images where a is better / equal / worse, "
        "both from a's side (effect > 0: a tends to be better). Seed SD is the SD across "
        "seeds of each seed's mean over the images.",
        "",
        replicate_line(result),
    ]
    for metric in result["metrics"]:
        lines += ["", metric_section(result, metric)]
    return "\n".join(lines) + "\n"


def replicate_line(result: dict[str, Any]) -> str:
    """Which seeds and folds each variant's scores come from."""
    parts = [
        f"`{v}`: {len(r['seeds'])} seed(s) {r['seeds']}, "
        + ("the fixed split" if r["folds"] == [FIXED_SPLIT] else f"fold(s) {r['folds']}")
        for v, r in result["replicates"].items()
    ]
    return "Replicates: " + "; ".join(parts) + "."


def metric_section(result: dict[str, Any], metric: str) -> str:
    """A metric's tables (variants, pairs, ranks), its Friedman line and its verdict."""
    better = result["metrics"][metric]
    parts = [f"## {metric} ({better} is better)", "", variant_table(result, metric)]
    if result["pairs"]:
        parts += ["", pair_table(result, metric)]
    if "friedman" in result:
        parts += ["", friedman_line(result["friedman"][metric])]
    if "rank_frequencies" in result:
        parts += ["", rank_table(result["rank_frequencies"][metric])]
    parts += ["", verdict(result, metric)]
    return "\n".join(parts)


def number(value: float | None, decimals: int) -> str:
    """One value: – for missing, `decimals` decimals."""
    return "–" if value is None else f"{value:.{decimals}f}"


def p_value(value: float | None) -> str:
    """A p-value: 3 decimals, or < 0.001."""
    if value is None:
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def interval(low: float | None, high: float | None, decimals: int, note: str | None) -> str:
    """[low, high], or – with the reason there is none."""
    if low is None or high is None:
        return f"– ({note})" if note else "–"
    return f"[{number(low, decimals)}, {number(high, decimals)}]"


def variant_table(result: dict[str, Any], metric: str) -> str:
    """One row per variant: n, mean ± SD, 95 % CI, seed SD (seeds), rank."""
    d = DECIMALS.get(metric, 4)
    rows = []
    for variant in result["variants"]:
        e = result["per_variant"][variant][metric]
        rows.append(
            {
                "variant": f"`{variant}`",
                "n": str(e["n"]),
                "mean ± SD": f"{number(e['mean'], d)} ± {number(e['sd'], d)}",
                "95 % CI": interval(e["ci_low"], e["ci_high"], d, e["ci_note"]),
                "seed SD (seeds)": f"{number(e['seed_sd'], d)} ({e['n_seeds']})",
                "rank": str(e["rank"]),
            }
        )
    return markdown_table(rows, ("variant", "n", "mean ± SD", "95 % CI", "seed SD (seeds)", "rank"))


def pair_table(result: dict[str, Any], metric: str) -> str:
    """One row per pair: a − b [CI], p, Holm p, effect, W/T/L, significant."""
    d = DECIMALS.get(metric, 4)
    columns = ("a vs b", "a − b [95 % CI]", "p", "Holm p", "effect", "W/T/L", "significant")
    rows = []
    for pair in result["pairs"].values():
        e = pair["metrics"][metric]
        diff = number(e["mean_diff"], d) + " " + interval(e["ci_low"], e["ci_high"], d, None)
        cells = (f"`{pair['a']}` vs `{pair['b']}`", diff, p_value(e["p"]))
        cells += (p_value(e["p_holm"]), number(e["effect"], 2))
        cells += (f"{e['wins']}/{e['ties']}/{e['losses']}", "yes" if e["significant"] else "no")
        rows.append(dict(zip(columns, cells, strict=True)))
    return markdown_table(rows, columns)


def friedman_line(entry: dict[str, Any]) -> str:
    """The omnibus test in one line."""
    f = "∞" if entry["F"] is None and entry["p"] == 0 else number(entry["F"], 2)
    df = f"{number(entry['df1'], 0)}, {number(entry['df2'], 0)}"
    return f"Friedman (Iman–Davenport): F({df}) = {f}, p {_p_phrase(entry['p'])}."


def _p_phrase(p: float | None) -> str:
    """'= 0.012' or '< 0.001' or 'not computable'."""
    if p is None:
        return "not computable"
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def rank_table(frequencies: dict[str, dict[str, float | None]]) -> str:
    """How often each variant holds each rank over the bootstrap resamples, in percent."""
    ranks = list(next(iter(frequencies.values())))
    columns = ("variant", *(f"rank {r}" for r in ranks))
    rows = [
        {"variant": f"`{variant}`"}
        | {f"rank {r}": "–" if f is None else f"{100 * f:.1f} %" for r, f in row.items()}
        for variant, row in frequencies.items()
    ]
    return "Ranking stability (share of bootstrap resamples):\n\n" + markdown_table(rows, columns)


def verdict(result: dict[str, Any], metric: str) -> str:
    """One plain sentence: which differences hold up after Holm and which do not."""
    held, not_held = [], []
    for pair in result["pairs"].values():
        e = pair["metrics"][metric]
        if e["significant"]:
            a_better = (e["effect"] or 0) > 0  # the sign the Wilcoxon test weighs
            winner, loser = (pair["a"], pair["b"]) if a_better else (pair["b"], pair["a"])
            held.append(f"`{winner}` better than `{loser}`")
        else:
            not_held.append(f"`{pair['a']}` vs `{pair['b']}`")
    if not held and not not_held:
        return f"**{metric}**: a single variant; nothing to compare."
    sentence = f"**{metric}**: "
    sentence += ("holds up: " + "; ".join(held)) if held else "no difference holds up"
    if not_held:
        sentence += f"; not shown (Holm p ≥ {result['settings']['alpha']}): " + "; ".join(not_held)
    return sentence + "."
