# Helpers shared by the rules: config validation, and the code deps and tracked params of each
# stage, read from dvc.yaml (declared there once, for both engines).
from pathlib import Path

from unetflow.pipeline.contract import check_config, code_deps, tracked_params_for

# The schema (workflow/schemas/params.schema.yaml) and the checks it cannot express, with
# one `key: problem` line per error, as the stage scripts report them under DVC.
check_config(config, "params.yaml")


wildcard_constraints:
    dataset="[a-z0-9_]+",
    model="[a-z0-9_]+",
    seed="[0-9]+",
    family="[a-z]+",
    level="[0-9]+",


def code(stage):
    """The unetflow source files `stage` runs, so that Snakemake re-runs it when they change."""
    return code_deps("dvc.yaml", stage)


def tracked(stage):
    """The params DVC tracks for `stage`, with their values, so Snakemake reruns on change."""
    return lambda wildcards: tracked_params_for("dvc.yaml", stage, config, wildcards)


def live_dir(wildcards, input):
    """The DVCLive folder of a training run, from its plots folder (dvclive/plots/metrics)."""
    return str(Path(input.curves).parent.parent)


def input_folder(key, depth):
    """A params function: the folder `depth` levels above the first file of input `key`, such
    as results/rows of <rows>/<dataset>/<model>.json (depth 2)."""

    def folder(wildcards, input):
        return str(Path(input[key][0]).parents[depth - 1])

    return folder


def compare_scores(wildcards):
    """The test scores compare reads: of every selected model's fixed-split run and, when
    folds and seeds are selected, of its replicates (dvc.yaml depends on their folder).
    """
    runs = expand("results/scores/{{dataset}}/{model}.csv", model=config["models"])
    replicates = expand(
        "results/scores/{{dataset}}/{model}/seed{seed}",
        model=config["models"],
        seed=config["seeds"],
    )
    return [path.format(dataset=wildcards.dataset) for path in runs + replicates]


def noise_inputs(pattern):
    """An input function: `pattern` for the job's dataset over every selected model and the
    noise study's families, levels and seeds (the placeholders it does not name are dropped).
    """

    def inputs(wildcards):
        paths = expand(
            pattern,
            dataset=wildcards.dataset,
            model=config["models"],
            family=config["noise_families"],
            level=config["noise_levels"],
            seed=config["noise_seeds"],
        )
        return list(dict.fromkeys(paths))

    return inputs
