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


# A replicate of the compare stage: train on cross-validation fold {fold} with seed {seed}.
rule train_replicate:
    input:
        script="scripts/train.py",
        code=code("train_replicate"),
        processed="data/processed/{dataset}",
        augmented="data/augmented/{dataset}",
    output:
        model="results/{dataset}/{model}/replicates/fold{fold}_seed{seed}/model.pt",
        live=directory(
            "results/{dataset}/{model}/replicates/fold{fold}_seed{seed}/dvclive"
        ),
    log:
        "logs/{dataset}/{model}/replicates/fold{fold}_seed{seed}/train.log",
    benchmark:
        "benchmarks/{dataset}/{model}/replicates/fold{fold}_seed{seed}/train.tsv"
    conda:
        "../envs/unetflow.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        preset=config["preset"],
        checkpoints="results/{dataset}/{model}/replicates/fold{fold}_seed{seed}/checkpoints",
        tracked=tracked("train_replicate"),
    shell:
        "python {input.script} --params params.yaml --preset {params.preset} "
        "--dataset {wildcards.dataset} --model {wildcards.model} "
        "--processed {input.processed} --augmented {input.augmented} "
        "--model-out {output.model} --live {output.live} "
        "--checkpoints {params.checkpoints} --fold {wildcards.fold} "
        "--seed {wildcards.seed} > {log} 2>&1"
