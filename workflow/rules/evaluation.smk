# The evaluate stage: per-image and aggregated metrics and figures, one job per dataset x
# model. Outputs marked report() go into `snakemake --report report.html`.


rule evaluate:
    input:
        script="scripts/evaluate.py",
        code=code("evaluate"),
        processed="data/processed/{dataset}",
        checkpoint="results/{dataset}/{model}/model.pt",
        predictions="results/{dataset}/{model}/predictions",
        curves="results/{dataset}/{model}/dvclive/plots/metrics",
    output:
        metrics="results/{dataset}/{model}/metrics.json",
        per_image="results/{dataset}/{model}/per_image.csv",
        figures=report(
            directory("results/{dataset}/{model}/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Runs",
            subcategory="{dataset} / {model}",
            labels={"dataset": "{dataset}", "model": "{model}", "figure": "{name}"},
        ),
        subgroups="results/{dataset}/{model}/subgroups.csv",
        shifts="results/{dataset}/{model}/shifts.csv",
        scores="results/scores/{dataset}/{model}.csv",
        row="results/rows/{dataset}/{model}.json",
    log:
        "logs/{dataset}/{model}/evaluate.log",
    benchmark:
        "benchmarks/{dataset}/{model}/evaluate.tsv"
    conda:
        "../envs/unetflow.yaml"
    params:
        preset=config["preset"],
        live=live_dir,
        tracked=tracked("evaluate"),
    shell:
        "python {input.script} --params params.yaml --preset {params.preset} "
        "--dataset {wildcards.dataset} --model {wildcards.model} "
        "--checkpoint {input.checkpoint} --processed {input.processed} "
        "--predictions {input.predictions} --live {params.live} "
        "--metrics {output.metrics} --per-image {output.per_image} --scores {output.scores} "
        "--figures {output.figures} --subgroups {output.subgroups} "
        "--shifts {output.shifts} --row {output.row} > {log} 2>&1"
