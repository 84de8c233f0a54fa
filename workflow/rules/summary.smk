# The summarize stage: one job over every dataset x model run.


rule summarize:
    input:
        script="scripts/summarize.py",
        code=code("summarize"),
        rows=expand(
            "results/rows/{dataset}/{model}.json",
            dataset=config["datasets"],
            model=config["models"],
        ),
        comparisons=expand(
            "results/comparison/{dataset}.{ext}",
            dataset=config["datasets"],
            ext=["json", "md", "png"],
        ),
    output:
        csv=report(
            "results/summary.csv",
            caption="../report/summary.rst",
            category="Summary",
            labels={"table": "all runs"},
        ),
        md="results/summary.md",
        metrics="metrics.json",
    log:
        "logs/summarize.log",
    benchmark:
        "benchmarks/summarize.tsv"
    conda:
        "../envs/unetflow.yaml"
    params:
        rows=input_folder("rows", 2),
        comparisons=input_folder("comparisons", 1),
        datasets=" ".join(config["datasets"]),
        models=" ".join(config["models"]),
        tracked=tracked("summarize"),
    shell:
        "python {input.script} --params params.yaml --rows {params.rows} "
        "--comparisons {params.comparisons} "
        "--csv {output.csv} --md {output.md} --metrics {output.metrics} "
        "--datasets {params.datasets} --models {params.models} > {log} 2>&1"
