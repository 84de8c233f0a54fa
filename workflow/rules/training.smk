# The train stage (GPU when present): one job per dataset x model.


rule train:
    input:
        script="scripts/train.py",
        code=code("train"),
        processed="data/processed/{dataset}",
        augmented="data/augmented/{dataset}",
    output:
        model="results/{dataset}/{model}/model.pt",
        metrics="results/{dataset}/{model}/dvclive/metrics.json",
        plots=directory("results/{dataset}/{model}/dvclive/plots/metrics"),
    log:
        "logs/{dataset}/{model}/train.log",
    benchmark:
        "benchmarks/{dataset}/{model}/train.tsv"
    conda:
        "../envs/unetflow.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        preset=config["preset"],
        live="results/{dataset}/{model}/dvclive",
        checkpoints="results/{dataset}/{model}/checkpoints",
        tracked=tracked("train"),
    shell:
        "python {input.script} --params params.yaml --preset {params.preset} "
        "--dataset {wildcards.dataset} --model {wildcards.model} "
        "--processed {input.processed} --augmented {input.augmented} "
        "--model-out {output.model} --live {params.live} "
        "--checkpoints {params.checkpoints} > {log} 2>&1"
