# Evaluation: per-image and aggregated metrics and figures, one job per dataset x model, and
# the summary of all runs. Outputs marked report() go into `snakemake --report report.html`.


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
        row="results/rows/{dataset}/{model}.json",
    log:
        "logs/{dataset}/{model}/evaluate.log",
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
        "--metrics {output.metrics} --per-image {output.per_image} "
        "--figures {output.figures} --subgroups {output.subgroups} "
        "--row {output.row} > {log} 2>&1"


rule summarize:
    input:
        script="scripts/summarize.py",
        code=code("summarize"),
        rows=expand(
            "results/rows/{dataset}/{model}.json",
            dataset=config["datasets"],
            model=config["models"],
        ),
    output:
        csv=report(
            "results/summary.csv",
            caption="../report/summary.rst",
            category="Summary",
            labels={"table": "all runs"},
        ),
        md="results/summary.md",
    log:
        "logs/summarize.log",
    conda:
        "../envs/unetflow.yaml"
    params:
        rows=rows_dir,
        datasets=" ".join(config["datasets"]),
        models=" ".join(config["models"]),
        tracked=tracked("summarize"),
    shell:
        "python {input.script} --params params.yaml --rows {params.rows} "
        "--csv {output.csv} --md {output.md} "
        "--datasets {params.datasets} --models {params.models} > {log} 2>&1"
