# unetflow: the U-Net reproduction as a Snakemake workflow. The same stages are defined for
# DVC in dvc.yaml; params.yaml is the only configuration for both.
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


report: "workflow/report/workflow.rst"


# Jobs too small to be worth a cluster job (or needing the network, which compute nodes often
# lack): under an executor such as SLURM they run on the machine that runs Snakemake. Without
# one (--cores) every job runs locally anyway; DVC has no such notion and needs none.
localrules:
    download,
    summarize,
    compare,


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/inference.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/summary.smk"
include: "workflow/rules/explain.smk"
include: "workflow/rules/comparison.smk"
include: "workflow/rules/noise.smk"


rule all:
    default_target: True
    input:
        augmented=expand("data/augmented/{dataset}", dataset=config["datasets"]),
        metrics=expand(
            "results/{dataset}/{model}/metrics.json",
            dataset=config["datasets"],
            model=config["models"],
        ),
        summary="results/summary.md",
        comparisons=expand(
            "results/comparison/{dataset}.json", dataset=config["datasets"]
        ),
        explain=expand(
            "results/{dataset}/{model}/explain",
            dataset=config["datasets"],
            model=config["models"],
        ),
        noise=expand("results/noise/{dataset}.json", dataset=config["noise_datasets"]),
