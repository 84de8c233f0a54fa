# unetflow: the U-Net reproduction as a Snakemake workflow. The same stages are defined for
# DVC in dvc.yaml; params.yaml is the only configuration for both.
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"


rule all:
    default_target: True
    input:
        augmented=expand("data/augmented/{dataset}", dataset=config["datasets"]),
        predictions=expand(
            "results/{dataset}/{model}/predictions",
            dataset=config["datasets"],
            model=config["models"],
        ),
