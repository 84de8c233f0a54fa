# The infer stage (GPU when present): one job per dataset x model.


rule infer:
    input:
        script="scripts/infer.py",
        code=code("infer"),
        checkpoint="results/{dataset}/{model}/model.pt",
        processed="data/processed/{dataset}",
    output:
        predictions=directory("results/{dataset}/{model}/predictions"),
    log:
        "logs/{dataset}/{model}/infer.log",
    benchmark:
        "benchmarks/{dataset}/{model}/infer.tsv"
    conda:
        "../envs/unetflow.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        preset=config["preset"],
        tracked=tracked("infer"),
    shell:
        "python {input.script} --params params.yaml --preset {params.preset} "
        "--dataset {wildcards.dataset} --checkpoint {input.checkpoint} "
        "--processed {input.processed} --out {output.predictions} > {log} 2>&1"
