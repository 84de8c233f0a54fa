"""noise.md: the noise study of one dataset (:func:`unetflow.noise.study.noise_study`) for a
reader, one section per question it answers: how fast each metric falls per family, whether a
model beats its own labels, whether a bias passes into the predictions, (EM) whether Dice and
the thinned V_Rand agree, and which comparisons noisy test labels flip."""

from __future__ import annotations

from typing import Any

from unetflow.comparison.report import DECIMALS, markdown_table, number
from unetflow.noise.study import STEP


def cell(entry: dict[str, float], metric: str) -> str:
    """`mean ± sd` over the seeds."""
    decimals = DECIMALS.get(metric, 4)
    return f"{number(entry['mean'], decimals)} ± {number(entry['sd'], decimals)}"


def runs_table(study: dict[str, Any], model: str) -> str:
    """Every family x level of `model`, and its clean run, against the labels' Dice."""
    metrics = [*study["metrics"], "area_bias"]
    columns = ("family", "level", "value", "applied", "label Dice", *metrics)
    clean = study["clean"][model]
    rows = [
        {
            "family": "clean",
            "level": "",
            "value": "",
            "applied": "",
            "label Dice": "1",
            **{m: number(clean[m], DECIMALS.get(m, 4)) for m in metrics},
        }
    ]
    for family, entries in study["runs"][model].items():
        for entry in entries.values():
            value = study["levels"][family][str(entry["level"])]
            rows.append(
                {
                    "family": family,
                    "level": str(entry["level"]),
                    "value": f"{value:g}",
                    "applied": f"{entry['applied']:g}",
                    "label Dice": cell(entry["label_dice"], "dice"),
                    **{m: cell(entry[m], m) for m in metrics},
                }
            )
    return markdown_table(rows, columns)


def slopes_table(study: dict[str, Any], model: str) -> str:
    """Per family, each metric's least-squares change per STEP loss of label Dice."""
    metrics = [*study["metrics"], "area_bias"]
    rows = [
        {"family": family, **{m: number(found[m], 4) for m in metrics}}
        for family, found in study["slopes"][model].items()
    ]
    return markdown_table(rows, ("family", *metrics))


def beats_labels(study: dict[str, Any], model: str) -> str:
    """Under zero-mean boundary noise: test Dice minus the training labels' Dice."""
    entries = study["runs"][model].get("boundary")
    if not entries:
        return "Not run: the study has no `boundary` family."
    rows = []
    for entry in entries.values():
        labels, test = entry["label_dice"]["mean"], entry["dice"]["mean"]
        verdict = "yes" if test > labels else "no"
        rows.append(
            {
                "level": str(entry["level"]),
                "label Dice": number(labels, 4),
                "test Dice": number(test, 4),
                "test − labels": number(test - labels, 4),
                "beats its labels": verdict,
            }
        )
    return markdown_table(
        rows, ("level", "label Dice", "test Dice", "test − labels", "beats its labels")
    )


def flips_section(study: dict[str, Any]) -> str:
    """The clean-label verdict of each pair, and what each noisy test flips."""
    noisy = study["noisy_test"]
    clean = noisy["verdicts"]["clean"]
    if not clean:
        return "A single model: no comparison to flip."
    lines = [
        "Clean test labels: "
        + "; ".join(
            f"`{pair}` {m} → {v}" for pair, found in clean.items() for m, v in found.items()
        )
    ]
    rows = []
    for name, flipped in noisy["flips"].items():
        changed = [
            f"`{pair}` {m}: {clean[pair][m]} → {noisy['verdicts'][name][pair][m]}"
            for pair, metrics in flipped.items()
            for m in metrics
        ]
        rows.append(
            {
                "noisy test": name,
                "label Dice": number(noisy["label_dice"][name], 4),
                "flipped": "; ".join(changed) or "none",
            }
        )
    return "\n".join(lines) + "\n\n" + markdown_table(rows, ("noisy test", "label Dice", "flipped"))


def noise_markdown(study: dict[str, Any]) -> str:
    """The whole of noise.md."""
    levels = "; ".join(
        f"{family} " + ", ".join(f"{i}: {v:g}" for i, v in values.items())
        for family, values in study["levels"].items()
    )
    parts = [
        f"# Annotation noise: {study['dataset']}",
        f"Models {', '.join(study['models'])}; seeds {study['seeds']} (mean ± SD over seeds); "
        f"levels ({levels}; px of a 512-px image; `applied`: at the processed size). Test "
        "metrics against the clean test masks; the label Dice is that of the corrupted training "
        "masks against the clean ones; `area_bias`: predicted over true area − 1.",
    ]
    for model in study["models"]:
        parts += [
            f"## {model}",
            runs_table(study, model),
            f"### How fast each metric moves (change per {STEP:g} loss of label Dice)",
            slopes_table(study, model),
            "### Does it beat its own labels (zero-mean boundary noise)?",
            beats_labels(study, model),
        ]
    parts += ["## Noisy test labels: which comparisons flip", flips_section(study)]
    return "\n\n".join(parts) + "\n"
