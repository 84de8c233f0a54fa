# Evaluation: per-image and aggregated metrics and figures, one job per dataset x model.


rule evaluate:
    input:
        script="scripts/evaluate.py",
        processed="data/processed/{dataset}",
        predictions="results/{dataset}/{model}/predictions",
        curves="results/{dataset}/{model}/dvclive/plots/metrics",
    output:
        metrics="results/{dataset}/{model}/metrics.json",
        per_image="results/{dataset}/{model}/per_image.csv",
        figures=directory("results/{dataset}/{model}/figures"),
    log:
        "logs/{dataset}/{model}/evaluate.log",
    conda:
        "../envs/unetflow.yaml"
    params:
        live=live_dir,
        tracked=tracked("evaluate"),
    shell:
        "python {input.script} --params params.yaml --dataset {wildcards.dataset} "
        "--processed {input.processed} --predictions {input.predictions} "
        "--live {params.live} --metrics {output.metrics} --per-image {output.per_image} "
        "--figures {output.figures} > {log} 2>&1"
