# Explanations of a trained model: occlusion sensitivity, block feature maps and the clusters
# of its bottleneck activations, one job per dataset x model (the DVC matrix cannot leave
# combinations out). Only chest X-ray U-Nets are explained; the others get a summary.json
# saying why (scripts/explain.py).


rule explain:
    input:
        script="scripts/explain.py",
        code=code("explain"),
        processed="data/processed/{dataset}",
        checkpoint="results/{dataset}/{model}/model.pt",
        per_image="results/{dataset}/{model}/per_image.csv",
    output:
        explain=report(
            directory("results/{dataset}/{model}/explain"),
            patterns=["{name}.png"],
            caption="../report/explain.rst",
            category="Explain",
            subcategory="{dataset} / {model}",
            labels={"dataset": "{dataset}", "model": "{model}", "figure": "{name}"},
        ),
    log:
        "logs/{dataset}/{model}/explain.log",
    benchmark:
        "benchmarks/{dataset}/{model}/explain.tsv"
    conda:
        "../envs/unetflow.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        tracked=tracked("explain"),
    shell:
        "python {input.script} --params params.yaml --dataset {wildcards.dataset} "
        "--model {wildcards.model} --checkpoint {input.checkpoint} "
        "--processed {input.processed} --per-image {input.per_image} "
        "--out {output.explain} > {log} 2>&1"
