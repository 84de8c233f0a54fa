# The compare stage: per dataset, every selected model on the same test images (over the
# replicates, cross-validation folds x training seeds, when they are selected).


# The replicates of one training seed: train, infer and evaluate on every selected fold.
rule replicates:
    input:
        script="scripts/replicates.py",
        code=code("replicates"),
        processed="data/processed/{dataset}",
        augmented="data/augmented/{dataset}",
    output:
        runs=directory("results/{dataset}/{model}/replicates/seed{seed}"),
        scores=directory("results/scores/{dataset}/{model}/seed{seed}"),
    log:
        "logs/{dataset}/{model}/replicates/seed{seed}.log",
    benchmark:
        "benchmarks/{dataset}/{model}/replicates/seed{seed}.tsv"
    conda:
        "../envs/unetflow.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        preset=config["preset"],
        checkpoints="results/{dataset}/{model}/replicates/checkpoints-seed{seed}",
        folds=" ".join(str(f) for f in config["folds"]),
        tracked=tracked("replicates"),
    shell:
        "python {input.script} --params params.yaml --preset {params.preset} "
        "--dataset {wildcards.dataset} --model {wildcards.model} --seed {wildcards.seed} "
        "--processed {input.processed} --augmented {input.augmented} "
        "--out {output.runs} --scores {output.scores} "
        "--checkpoints {params.checkpoints} --folds {params.folds} > {log} 2>&1"


rule compare:
    input:
        script="scripts/compare.py",
        code=code("compare"),
        scores=compare_scores,
    output:
        json="results/comparison/{dataset}.json",
        md="results/comparison/{dataset}.md",
        figure=report(
            "results/comparison/{dataset}.png",
            caption="../report/comparison.rst",
            category="Comparison",
            labels={"dataset": "{dataset}"},
        ),
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
