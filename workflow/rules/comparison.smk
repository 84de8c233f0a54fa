# The compare stage: per dataset, every selected model on the same test images (over the
# replicates, cross-validation folds x training seeds, when they are selected).


rule compare:
    input:
        script="scripts/compare.py",
        code=code("compare"),
        scores=compare_scores,
    output:
        json="results/{dataset}/comparison.json",
        md="results/{dataset}/comparison.md",
        figure="results/{dataset}/comparison.png",
    log:
        "logs/{dataset}/compare.log",
    benchmark:
        "benchmarks/{dataset}/compare.tsv"
    conda:
        "../envs/unetflow.yaml"
    params:
        scores="results/scores/{dataset}",
        models=" ".join(config["models"]),
        folds=" ".join(str(f) for f in config["folds"]),
        seeds=" ".join(str(s) for s in config["seeds"]),
        tracked=tracked("compare"),
    shell:
        "python {input.script} --params params.yaml --dataset {wildcards.dataset} "
        "--scores {params.scores} --json {output.json} --md {output.md} "
        "--figure {output.figure} --models {params.models} --folds {params.folds} "
        "--seeds {params.seeds} > {log} 2>&1"
